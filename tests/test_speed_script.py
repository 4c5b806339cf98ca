"""benchmarks/speed.py --merge: one issue-6 record from a forward run and an e2e run made apart."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("speed_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_record(part: str, size: str = "480*832", gpu: str = "NVIDIA H200") -> dict:
    settings = {"model": "a14b", "weights": "random", "size": size, "frames": 81, "steps": 20, "dtype": "bfloat16"}
    record = {"command": f"speed.py --part {part}", "gpu": gpu, "n_gpus": 1, "env": {}, "settings": settings}
    if part == "forward":
        record.update(forward={"stock_eager": {}}, stock_forward_s=3.26, wanbench_forward_s=2.6, mfu=0.65,
                      wanbench_forward_variant="wanbench_compiled_fa4")
    else:
        record.update(e2e={"stock": {}}, stock_e2e_s=134.2, wanbench_e2e_s=107.0, ratio_e2e=134.2 / 107.0,
                      mfu=0.653)
    return record


def test_merge_keeps_both_runs_figures_and_commands(speed, tmp_path, monkeypatch):
    paths = []
    for part in ("e2e", "forward"):  # either order
        path = tmp_path / f"{part}.json"
        path.write_text(json.dumps(run_record(part)))
        paths.append(str(path))
    monkeypatch.setattr(sys, "argv", ["speed.py", "--merge", *paths])
    merged = speed.merge(paths, tmp_path / "speed.json")
    on_disk = json.loads((tmp_path / "speed.json").read_text())
    for key in ("gpu", "n_gpus", "settings", "stock_forward_s", "wanbench_forward_s", "stock_e2e_s",
                "wanbench_e2e_s", "ratio_e2e", "mfu"):
        assert key in on_disk, key
    assert merged["wanbench_forward_s"] == 2.6 and merged["ratio_e2e"] == pytest.approx(134.2 / 107.0)
    assert merged["mfu"] == 0.653 and merged["mfu_forward"] == 0.65
    assert merged["merged_from"] == {"forward": "speed.py --part forward", "e2e": "speed.py --part e2e"}


@pytest.mark.parametrize(("forward", "e2e", "message"), [
    (run_record("forward"), run_record("e2e", size="1280*720"), "differ in size"),
    (run_record("forward"), run_record("e2e", gpu="NVIDIA H100"), "different GPUs"),
    (run_record("forward"), run_record("forward"), "one forward JSON and one e2e JSON"),
])
def test_merge_refuses_runs_that_do_not_belong_together(speed, tmp_path, forward, e2e, message):
    paths = []
    for i, record in enumerate((forward, e2e)):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(record))
        paths.append(str(path))
    with pytest.raises(SystemExit, match=message):
        speed.merge(paths, tmp_path / "speed.json")
    assert not (tmp_path / "speed.json").exists()
