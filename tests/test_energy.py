"""Energy per video: NVML's counter difference around the generation, into the record, report, CSV and compare."""

from __future__ import annotations

import csv
import sys
import types

import pytest
import torch

from wanbench.cli import main
from wanbench.config import config_for_preset
from wanbench.engine.generate import open_session, run_once
from wanbench.measure.energy import EnergyCounter, combine, window
from wanbench.store import ResultsStore


class FakeCounter:
    """A GPU energy counter that advances by `step_mj` each time it is read."""

    def __init__(self, start_mj: int, step_mj: int) -> None:
        self.value, self.step = start_mj, step_mj

    def read_mj(self) -> int:
        value = self.value
        self.value += self.step
        return value


def test_the_counter_is_read_through_nvml_for_the_ranks_gpu(monkeypatch):
    readings = iter([5_000, 5_000, 17_500])
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetTotalEnergyConsumption=lambda handle: next(readings))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    counter = EnergyCounter(torch.device("cuda", 0))
    assert counter.handle == "gpu3"  # cuda:0 under CUDA_VISIBLE_DEVICES=3 is NVML's GPU 3
    start, end = counter.read_mj(), counter.read_mj()
    block = window(start, end, 2.5)
    assert block["joules"] == pytest.approx(12.5) and block["avg_watts"] == pytest.approx(5.0)
    assert EnergyCounter(torch.device("cpu")).read_mj() is None


def test_a_run_records_the_counters_difference_over_its_generation():
    session = open_session(config_for_preset("tiny", device="cpu", steps=2))
    session.energy = FakeCounter(1_000_000, 40_000)  # 40 J between the two readings
    record = run_once(session).result.to_dict()
    energy, phases = record["energy"], record["phases"]
    generation_s = phases["total_s"] - phases["load_s"] - phases["compile_s"]
    assert energy["measured"] and energy["joules"] == pytest.approx(40.0)
    assert energy["seconds"] == pytest.approx(generation_s, rel=1e-6)
    assert energy["avg_watts_per_gpu"] == pytest.approx(40.0 / generation_s)
    assert energy["gpus"] == 1 and energy["per_gpu_joules"] == [pytest.approx(40.0)]
    plain = run_once(open_session(config_for_preset("tiny", device="cpu", steps=1))).result.to_dict()
    assert plain["energy"] == {"measured": False, "reason": "no GPU energy counter (CPU run, or NVML missing)"}


def test_ranks_add_up_and_power_is_per_gpu():
    ranks = [window(0, 30_000, 10.0), window(0, 50_000, 10.0)]
    run = combine(ranks)
    assert run["joules"] == pytest.approx(80.0) and run["avg_watts_per_gpu"] == pytest.approx(4.0)
    assert not combine([ranks[0], window(None, None, 10.0)])["measured"]


def _gpu_record(seconds: float, joules: float, gpus: int) -> dict:
    return {"config": {"model": "a14b", "width": 832, "height": 480, "frames": 81, "steps": 10, "weights": "random",
                       "parallel": {"gpus": gpus, "strategy": "auto"}},
            "status": "ok", "phases": {"total_s": seconds + 2, "load_s": 2.0, "compile_s": 0.0, "denoise_s": seconds,
                                       "step_s": [seconds / 10] * 10, "other_s": 0.0},
            "memory": {"ranks": [{"max_allocated_gb": 70.0, "capacity_gb": 141.0}] * gpus},
            "energy": combine([window(0, int(joules / gpus * 1000), seconds)] * gpus),
            "env": {"gpu_names": ["NVIDIA H200"] * gpus}}


def test_energy_and_cost_reach_the_report_csv_and_compare(tmp_path, capsys):
    base, new = tmp_path / "base", tmp_path / "new"
    for folder, joules in ((base, 36_000.0), (new, 39_600.0)):
        with ResultsStore(folder) as store:
            for i in range(2):
                store.add_run(_gpu_record(60.0, joules, 1), "s", "a14b 1 GPU", i)
                store.add_run(_gpu_record(32.0, joules * 1.1, 2), "s", "a14b 2 GPU", i)
    assert main(["report", str(base), "--gpu-hour-price", "3.6"]) == 0
    md = (base / "report" / "report.md").read_text()
    section = md.split("## Energy and cost")[1].split("\n## ")[0]
    one = next(ln for ln in section.splitlines() if ln.startswith("| a14b 1 GPU"))
    # 60 s on one GPU: 60 GPU-seconds, 60 videos per GPU-hour, 36 kJ, 600 W, 0.06 per video at 3.6 per hour
    assert "| 60.0 | 60.0 | 36.0 kJ" in one and "600 W" in one and "0.0600" in one and "60.00" in one
    two = next(ln for ln in section.splitlines() if ln.startswith("| a14b 2 GPU"))
    assert "| 64.0 | 56.2 | 39.6 kJ" in two and "619 W" in two
    assert (base / "report" / "energy.png").exists()
    rows = {r["label"]: r for r in csv.DictReader((base / "report" / "summary.csv").open())}
    assert float(rows["a14b 1 GPU"]["energy_median_j"]) == 36_000.0
    assert float(rows["a14b 1 GPU"]["cost_per_video"]) == pytest.approx(0.06)
    capsys.readouterr()
    main(["compare", str(base), str(new)])
    assert "energy +10.0%" in capsys.readouterr().out
    assert main(["report", str(base), "--gpu-hour-price", "-1"]) == 2


def test_cpu_reports_say_energy_is_not_measured(smoke_results):
    out, _ = smoke_results
    md = (out / "report" / "report.md").read_text()
    assert "energy is not measured on CPU-only runs" in md.split("## Energy and cost")[1]
