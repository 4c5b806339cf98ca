"""wanbench bench: the smoke suite, failure isolation, resume after a runner crash, store agreement."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wanbench.bench.runner import run_suite
from wanbench.bench.suite import SuiteConfig, expand, load_suite_file, preset_suite
from wanbench.errors import UserError
from wanbench.store import ResultsStore


def db_rows(folder):
    with sqlite3.connect(folder / "results.db") as conn:
        return conn.execute("SELECT run_id, label, repeat, status, error FROM runs").fetchall()


def jsonl_records(folder):
    return [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines() if line.strip()]


def test_smoke_suite_end_to_end(smoke_results):
    out, proc = smoke_results
    assert "suite smoke: 4 configurations run (0 skipped), 20/20 runs ok (100%)" in proc.stdout
    rows = db_rows(out)
    assert len(rows) == 20 and {r[3] for r in rows} == {"ok"}
    records = jsonl_records(out)
    assert sorted(r["run_id"] for r in records) == sorted(r[0] for r in rows)
    for record in records:
        host = record["memory"]["host_rss"]
        assert host["peak_gb"] > 0.1 and host["samples"]["rss_gb"]
        assert len(record["phases"]["step_s"]) == record["config"]["steps"]
        gpus = record["config"]["parallel"]["gpus"]
        assert len(record["memory"]["ranks"]) == gpus


def test_invalid_and_killed_configurations_are_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("WANBENCH_FAULT", "die:0:killme")
    suite = SuiteConfig(
        name="faults", fixed={"model": "tiny", "device": "cpu", "steps": 2},
        configs=({"tag": "fine"}, {"frames": 10}, {"tag": "killme"}, {"tag": "after"}),
        warmup=0, repeats=1, timeout_s=120,
    )
    summary = run_suite(suite, tmp_path)
    rows = {r[1].split(" | ")[-1]: r for r in db_rows(tmp_path)}
    assert rows["fine"][3] == "ok" and rows["after"][3] == "ok"
    invalid = next(r for r in db_rows(tmp_path) if "10" in r[1].split(" | ")[1])
    assert invalid[3] == "failed" and invalid[4].startswith("bad --frames 10: use 4n+1 frames")
    assert rows["killme"][3] == "failed" and "killed by signal 9" in rows["killme"][4]
    assert summary["runs"] == 4 and summary["runs_ok"] == 2 and summary["success_rate"] == 0.5


def test_a_hung_worker_is_named_where_it_hangs(tmp_path, monkeypatch):
    monkeypatch.setenv("WANBENCH_FAULT", "hang:0")
    suite = SuiteConfig(name="hang", fixed={"model": "tiny", "device": "cpu", "steps": 2}, configs=({},),
                        warmup=0, repeats=1, timeout_s=20)
    run_suite(suite, tmp_path)
    (row,) = db_rows(tmp_path)
    assert row[3] == "timeout" and "worker killed after the 20 s timeout; rank 0 at generate.py:" in row[4], row[4]
    assert " inject_fault: give a larger timeout_s in the suite, or --timeout (log: " in row[4], row[4]


def test_resume_after_a_runner_crash_redoes_nothing_finished(tmp_path):
    suite_file = tmp_path / "two.toml"
    suite_file.write_text(
        'name = "two"\nwarmup = 0\nrepeats = 1\n[fixed]\nmodel = "tiny"\ndevice = "cpu"\nsteps = 2\n'
        '[[configs]]\ntag = "first"\n[[configs]]\ntag = "second"\n'
    )
    out = tmp_path / "out"
    env = {**os.environ, "WANBENCH_FAULT": "hang:0:second"}
    runner = subprocess.Popen([sys.executable, "-m", "wanbench.cli", "bench", str(suite_file), "--out", str(out),
                               "--no-report"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not ((out / "results.db").exists() and len(db_rows(out)) == 1):
        time.sleep(0.5)
    time.sleep(3.0)  # the second configuration's worker is now running (and hanging)
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    # The hanging worker must not outlive the crashed runner.
    deadline = time.time() + 10
    while time.time() < deadline and worker_processes(out):
        time.sleep(0.5)
    assert worker_processes(out) == [], "a worker outlived the crashed runner"
    first = db_rows(out)
    assert len(first) == 1 and first[0][3] == "ok"

    proc = subprocess.run([sys.executable, "-m", "wanbench.cli", "bench", str(suite_file), "--out", str(out),
                           "--resume", "--no-report"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 configurations run (1 skipped), 1/1 runs ok" in proc.stdout
    rows = db_rows(out)
    assert len(rows) == 2 and first[0] in rows
    assert sorted(r["run_id"] for r in jsonl_records(out)) == sorted(r[0] for r in rows)


def worker_processes(out) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(out) in " ".join(proc.info["cmdline"] or []) and "wanbench.bench.worker" in " ".join(
                    proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_a_second_run_into_a_used_folder_needs_resume(smoke_results):
    out, _ = smoke_results
    with pytest.raises(UserError, match="--resume"):
        run_suite(preset_suite("smoke"), out)


def test_store_reconciles_a_jsonl_cut_by_a_crash(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.add_run({"config": {"a": 1}, "status": "ok", "phases": {"total_s": 1.0}}, "s", "x", 0)
        store.add_run({"config": {"a": 2}, "status": "ok", "phases": {"total_s": 2.0}}, "s", "y", 0)
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    (tmp_path / "runs.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # second line cut mid-write
    with ResultsStore(tmp_path) as store:
        assert len(store.runs()) == 2
    assert len(jsonl_records_tolerant(tmp_path)) == 2


def jsonl_records_tolerant(folder):
    out = []
    for line in (folder / "runs.jsonl").read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def test_suite_file_axes_expand_to_their_product(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[fixed]\nmodel = "tiny"\nsize = "64*64"\n[axes]\nsteps = [1, 2, 3]\ngpus = [1, 2]\n')
    configs = expand(load_suite_file(path))
    assert len(configs) == 6
    assert {(c.steps, c.parallel.gpus, c.width) for c in configs} == {(s, g, 64) for s in (1, 2, 3) for g in (1, 2)}
    path.write_text('[fixed]\nmodel = "tiny"\nbogus = 1\n')
    with pytest.raises(UserError, match="unknown setting 'bogus'"):
        expand(load_suite_file(path))
    path.write_text('[fixed]\nmodel = "tiny"\nrepeats = 2\n')  # a suite key in a run's table: says where it goes
    with pytest.raises(UserError, match=r"repeats in \[fixed\] is a setting of the suite.*top of the file"):
        load_suite_file(path)


def test_seed_preset_is_the_seed_reports_matrix():
    """Each of the seed's runs twice: through the official code with the seed's own flags, and wanbench's defaults."""
    import importlib.util

    if importlib.util.find_spec("wan") is None:
        pytest.skip("the official code is not installed (pip install --no-deps wan22==2.2.11)")
    configs = expand(preset_suite("seed", gpus_available=8))
    assert [(c.steps, c.parallel.gpus, c.engine, c.size, c.frames) for c in configs] == [
        (s, g, e, "480*832", 81) for s in (10, 20) for g in (1, 8) for e in ("official", "wanbench")]
    official = [c for c in configs if c.engine == "official"]
    one, eight = official[0], official[1]
    # generate.py --offload_model True --convert_model_dtype on one GPU; --dit_fsdp --t5_fsdp --ulysses_size 8
    assert (one.parallel.offload, one.convert_model_dtype, one.init_on_cpu) == ("model", True, True)
    assert (eight.parallel.fsdp, eight.parallel.ulysses, eight.parallel.offload) == (("dit", "t5"), 8, "none")
    assert all(not c.compile for c in official)


def test_seed_preset_without_the_official_code_runs_wanbench_and_says_how_to_add_it(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wan" else find_spec(name, *a))
    suite = preset_suite("seed", gpus_available=1)
    assert {c.engine for c in expand(suite)} == {"wanbench"}
    assert any("pip install --no-deps wan22" in note for note in suite.notes)


def test_nvml_ids_follow_cuda_visible_devices() -> None:
    """A run limited to GPUs 2,3 must sample NVML's GPUs 2,3, not 0,1."""
    from wanbench.measure.sampler import nvml_ids

    assert nvml_ids([0, 1], None) == {0: 0, 1: 1}
    assert nvml_ids([0, 1], "2,3") == {0: 2, 1: 3}
    assert nvml_ids([1], " 5, 7 ") == {1: 7}
    assert nvml_ids([0], "GPU-8e2f") == {0: "GPU-8e2f"}
    with pytest.raises(ValueError, match="not visible"):
        nvml_ids([0, 1], "3")


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "benchmarks" / "suites").glob("*.toml")),
                         ids=lambda p: p.name)
def test_committed_suites_pass_the_up_front_checks(path, monkeypatch):
    # A suite that a device call will run must not fail on a setting the CPU can already refuse; they are for GPU
    # machines, so the refusals of a14b and of GPU-only settings on this CPU do not apply.
    from wanbench.engine.parallel import check_runnable

    monkeypatch.setattr("wanbench.models.footprint.runs_on_cpu", lambda config: False)
    monkeypatch.setattr("wanbench.engine.parallel.check_device_needs", lambda config: None)
    monkeypatch.setattr("wanbench.engine.parallel.check_attention_device", lambda config, dims: None)

    configs = expand(load_suite_file(path))
    assert configs
    for config in configs:
        check_runnable(config)


def test_labels_say_cpu_without_a_device_setting_and_name_fixed_threads(monkeypatch):
    import torch

    from wanbench.bench.suite import label, run_config_from

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = label(run_config_from({"model": "tiny", "threads": 2}))
    assert "1 CPU proc" in text and "2 threads" in text and "GPU" not in text
