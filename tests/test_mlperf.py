"""The MLPerf scenario through the real LoadGen, on tiny and the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from wanbench.cli import main
from wanbench.mlperf.summary import headline, loadgen_figures, parse_summary
from wanbench.report import write_report
from wanbench.store import ResultsStore

TINY = ["--model", "tiny", "--size", "96*64", "--frames", "9", "--steps", "2", "--device", "cpu",
        "--min-duration", "0", "--min-query-count", "3"]


def test_single_stream_runs_loadgen_and_agrees_with_our_timers(tmp_path, capsys):
    out = tmp_path / "ss"
    assert main(["mlperf", "--scenario", "SingleStream", *TINY, "--out", str(out)]) == 0
    logs = out / "loadgen-1"
    assert (logs / "mlperf_log_summary.txt").exists() and (logs / "mlperf_log_detail.txt").exists()
    figures = headline(parse_summary(logs / "mlperf_log_summary.txt"))
    assert figures["scenario"] == "SingleStream" and figures["mode"] == "PerformanceOnly"
    ours = json.loads((logs / "mlperf_result.json").read_text())["wanbench_latencies_s"]
    assert len(ours) >= 3
    # LoadGen measures issue -> complete; our timer brackets the same generation: within 5% or 20 ms.
    assert figures["max_latency_s"] == pytest.approx(max(ours), rel=0.05, abs=0.02)
    assert figures["min_latency_s"] == pytest.approx(min(ours), rel=0.05, abs=0.02)
    with ResultsStore(out) as store:
        stored = store.mlperf_results()
        runs = store.runs()
    assert stored and stored[0]["figures"]["p90_latency_s"] == figures["p90_latency_s"]
    assert len(runs) == len(ours) and all(r["status"] == "ok" for r in runs)
    # Samples carry their own prompts but are repeats of one configuration (one row, n = queries).
    assert len({r["config"]["prompt"] for r in runs}) > 1 and len({r["config_key"] for r in runs}) == 1
    # Each engine record's generation time is inside LoadGen's latency of that sample.
    gen = sorted(r["phases"]["total_s"] - r["phases"]["load_s"] for r in runs)
    assert all(g <= lat + 0.02 for g, lat in zip(gen, sorted(ours), strict=True))
    line = capsys.readouterr().out
    # LoadGen's reason for INVALID is said; a CPU run has no GPU-seconds
    assert "p90 latency" in line and "INVALID (early stopping not satisfied: " in line and "GPU-seconds" not in line
    write_report(out)
    md = (out / "report" / "report.md").read_text()
    assert "MLPerf (LoadGen)" in md and f"{figures['p90_latency_s']:.2f} s" in md
    assert "INVALID: early stopping not satisfied" in md
    assert f"n={len(runs)})" in md and "of 1 configuration," in md
    # the mode is in the record and the report: exact here; an approximate mode (--fp8) is named
    settings = json.loads((logs / "mlperf_result.json").read_text())["settings"]
    assert (settings["mode"], settings["engine"]) == ("exact", "wanbench") and "| exact |" in md
    # a second run into the same folder keeps the first one's LoadGen logs
    assert main(["mlperf", "--scenario", "SingleStream", *TINY, "--min-query-count", "1", "--out", str(out)]) == 0
    assert (out / "loadgen-2" / "mlperf_log_summary.txt").exists() and (logs / "mlperf_log_summary.txt").exists()
    with ResultsStore(out) as store:
        assert [r["figures"]["logs"] for r in store.mlperf_results()] == [str(logs), str(out / "loadgen-2")]


def test_offline_with_two_data_parallel_replicas(tmp_path):
    out = tmp_path / "off"
    run = [sys.executable, "-m", "wanbench.cli", "mlperf", "--scenario", "Offline", *TINY, "--threads", "1",
           "--out", str(out)]
    for extra in (["--gpus", "2", "--dp", "2"], []):
        proc = subprocess.run([*run, *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    logs = out / "loadgen-1"
    figures = headline(parse_summary(logs / "mlperf_log_summary.txt"))
    assert figures["scenario"] == "Offline" and figures["samples_per_second"] > 0
    result = json.loads((logs / "mlperf_result.json").read_text())
    assert result["settings"]["dp"] == 2 and "2 replicas" in result["settings"]["parallel"]
    with ResultsStore(out) as store:
        runs = [r for r in store.runs() if r["config"]["parallel"]["dp"] == 2]
    # every sample of both replicas is recorded, not only rank 0's
    assert len(runs) == len(result["wanbench_latencies_s"]) >= 3
    proc = subprocess.run([sys.executable, "-m", "wanbench.cli", "report", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "report" / "summary.json").read_text())
    (replicated,) = [r for r in summary["rows"] if r["replicas"] == 2]
    # replicas make more videos, not one faster: no speedup or efficiency over the 1-process run
    assert replicated["speedup"] is None and replicated["efficiency"] is None
    assert replicated["gpus_per_video"] == 1
    # Offline's figure is samples per second: no p90 or mean latency of a whole query
    rows = [line.split(" | ") for line in (out / "report" / "report.md").read_text().splitlines()
            if line.startswith("| Offline |")]
    assert len(rows) == 2 and all(row[4:6] == ["—", "—"] for row in rows)


def test_an_approximate_mode_is_named_and_fp8_is_refused_where_it_cannot_run(capsys):
    import dataclasses

    from wanbench.config import config_for_preset
    from wanbench.mlperf.run import mode_of

    config = config_for_preset("a14b")
    assert mode_of(config) == "exact"
    assert mode_of(dataclasses.replace(config, fp8="linear")) == "APPROXIMATE: fp8 linear"
    assert main(["mlperf", "--model", "tiny", "--device", "cpu", "--fp8", "linear"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "FP8 tensor cores" in err


def test_accuracy_mode_is_refused_with_the_reason(capsys):
    assert main(["mlperf", *TINY, "--accuracy"]) == 2
    assert "VBench" in capsys.readouterr().err


def test_bench_suite_in_mlperf_mode_stores_loadgen_figures(tmp_path):
    suite = tmp_path / "ml.toml"
    suite.write_text('name = "ml"\nwarmup = 0\nrepeats = 1\n[mlperf]\nscenario = "SingleStream"\n'
                     'min_duration_s = 0.0\nmin_query_count = 2\n[fixed]\nmodel = "tiny"\ndevice = "cpu"\n'
                     'steps = 2\n')
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "wanbench.cli", "bench", str(suite), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with ResultsStore(out) as store:
        results = store.mlperf_results()
    assert len(results) == 1 and results[0]["figures"]["scenario"] == "SingleStream"
    assert "MLPerf (LoadGen)" in (out / "report" / "report.md").read_text()


def test_rates_come_from_the_full_precision_detail_log(tmp_path):
    # LoadGen's summary rounds a 70 s sample's rate to "0.01"; 2 GPUs / 0.01 would claim 200 GPU-s.
    (tmp_path / "mlperf_log_summary.txt").write_text(
        "Scenario : SingleStream\nResult is : INVALID\n90.0th percentile latency (ns) : 69537198392\n"
        "QPS w/o loadgen overhead        : 0.01\nMean latency (ns)               : 69397629836\n")
    (tmp_path / "mlperf_log_detail.txt").write_text(
        ':::MLLOG {"key": "result_qps_without_loadgen_overhead", "value": 0.0144097, "time_ms": 1}\n'
        ':::MLLOG {"key": "result_query_count", "value": 3, "time_ms": 2}\nnot a log line\n')
    figures, _ = loadgen_figures(tmp_path, gpus=2)
    assert figures["samples_per_second"] == 0.0144097 and figures["queries"] == 3
    assert figures["gpu_seconds_per_video"] == pytest.approx(138.80, abs=0.01)
    assert figures["p90_latency_s"] == pytest.approx(69.537, abs=1e-3)


def test_loadgens_reasons_and_early_stopping_estimate_are_read(tmp_path):
    (tmp_path / "mlperf_log_summary.txt").write_text(
        "Scenario : Offline\nResult is : INVALID\n  Min duration satisfied : NO\n  Min queries satisfied : Yes\n"
        "Recommendations:\n * Increase expected QPS so the loadgen pre-generates a larger (coalesced) query.\n\n"
        "Early stopping 90.0th percentile estimate: 220399292\nSamples per second: 4.5\n")
    figures, _ = loadgen_figures(tmp_path, gpus=None)
    assert figures["early_stopping_p90_s"] == pytest.approx(0.2204, abs=1e-4)
    assert figures["gpu_seconds_per_video"] is None  # a CPU run
    because = figures["invalid_because"]
    assert because.startswith("min duration not satisfied: Increase expected QPS") and "--expected-latency" in because


@pytest.mark.parametrize(("model", "size", "steps"), [("a14b", "1280*720", 20), ("tiny", "96*64", 4)])
def test_mlperf_reference_settings_apply_to_a14b_only(monkeypatch, tmp_path, model, size, steps):
    # The reference's 720p and 20 steps are A14B's; a tiny run keeps its preset's size (a 720p tiny run took minutes).
    seen = {}

    def capture(config, *args, **kwargs):
        seen["config"] = config

    monkeypatch.setattr("wanbench.mlperf.run.run_mlperf", capture)
    monkeypatch.setattr("wanbench.cli.check_and_note", lambda config: None)
    assert main(["mlperf", "--model", model, "--device", "cpu", "--out", str(tmp_path)]) == 0
    config = seen["config"]
    assert (config.size, config.steps) == (size, steps)
    assert config.vae_dtype == "float32" or model != "a14b"


def test_single_stream_in_an_fp8_mode_says_so_in_its_record_and_report(tmp_path):
    """`--fp8 all` through the real LoadGen, its GPU kernels stood in for on the CPU (tests/fp8_stand_in.py)."""
    from fp8_stand_in import subprocess_env

    out = tmp_path / "fp8"
    tiny = [a for a in TINY if a not in ("--device", "cpu")]  # an explicit --device cpu is refused with --fp8
    run = [sys.executable, "-m", "wanbench.cli"]
    proc = subprocess.run([*run, "mlperf", *tiny, "--dtype", "bfloat16", "--fp8", "all", "--min-query-count", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlperf SingleStream (APPROXIMATE: fp8 all)" in proc.stdout
    settings = json.loads((out / "loadgen-1" / "mlperf_result.json").read_text())["settings"]
    assert settings["mode"] == "APPROXIMATE: fp8 all"
    with ResultsStore(out) as store:
        assert all(r["config"]["fp8"] == "all" for r in store.runs())
    proc = subprocess.run([*run, "report", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| APPROXIMATE: fp8 all |" in (out / "report" / "report.md").read_text()


@pytest.mark.parametrize(("flags", "message"), [
    ("--expected-latency -5", "bad --expected-latency -5: give a positive number"),
    ("--min-query-count 0", "bad --min-query-count 0: give 1 to 10^9"),
    ("--min-query-count 100000000000000000000", "bad --min-query-count 1e+20: give 1 to 10^9"),
    ("--min-duration -1", "bad --min-duration -1: give 0 to 10^7 seconds"),
    ("--min-duration inf", "bad --min-duration inf: give 0 to 10^7 seconds"),
    ("--expected-latency inf", "bad --expected-latency inf: give a positive number"),
    ("--warmup-steps -1", "bad --warmup-steps -1: give 0 to 10000"),
    ("--timeout inf", "bad --timeout inf: give a positive number of seconds"),
    ("--steps 100000000000", "bad --steps 100000000000: use 1 to 10000"),
    ("--scenario Offline --dp 0", "bad --dp 0: give 1 or more"),
    ("--scenario Offline --dp 2", "--dp 2 replicas need a GPU/process count that is a multiple of 2, and this run "
     "has 1: e.g. --gpus 2"),
    ("--output x.mp4", "unrecognized arguments: --output"),
    ("--prompts {folder}", "is a folder: give a UTF-8 text file"),
    ("--prompts {latin1}", "is not UTF-8 text"),
    ("--out {file}", "it is a file: give a folder with --out"),
])
def test_mlperf_mistakes_end_in_one_line_before_anything_loads(tmp_path, capsys, flags, message):
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait\n")
    (tmp_path / "file").write_text("")
    flags = flags.format(folder=tmp_path, latin1=tmp_path / "latin1.txt", file=tmp_path / "file")
    args = ["mlperf", *TINY, *flags.split()]
    if "--out" not in flags:
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()  # refused before the results folder was made


@pytest.mark.parametrize(("table", "message"), [
    ('scenario = "Server"', "bad scenario 'Server': choose SingleStream or Offline"),
    ("min_querys = 2", "min_querys (did you mean min_query_count?)"),
    ('min_query_count = "2"', "min_query_count takes a whole number"),
    ("expected_latency_s = 0", "bad expected_latency_s = 0: give a positive number"),
])
def test_a_suites_mlperf_table_is_checked_before_any_worker_starts(tmp_path, capsys, table, message):
    suite = tmp_path / "ml.toml"
    suite.write_text(f'name = "ml"\n[mlperf]\n{table}\n[fixed]\nmodel = "tiny"\ndevice = "cpu"\n')
    assert main(["bench", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"bad suite file {suite}" in err and message in err, err
    suite.write_text('name = "ml"\nrepeats = 3\n[mlperf]\n[fixed]\nmodel = "tiny"\n')
    assert main(["bench", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert "a configuration is one LoadGen run" in capsys.readouterr().err
    suite.write_text('name = "ml"\n[mlperf]\n[fixed]\nmodel = "tiny"\n')
    assert main(["bench", str(suite), "--repeats", "3", "--out", str(tmp_path / "out")]) == 2
    assert "bad --repeats 3: give 1 with [mlperf]" in capsys.readouterr().err


@pytest.mark.parametrize(("fixed", "message"), [
    ('output = "v.mp4"', "an MLPerf run writes no video per query"),
    ("gpus = 2\ndp = 2", "SingleStream runs one sample at a time across all GPUs"),
])
def test_a_suite_asks_nothing_of_mlperf_that_it_cannot_be(tmp_path, capsys, fixed, message):
    suite = tmp_path / "ml.toml"
    suite.write_text(f'name = "ml"\n[mlperf]\n[fixed]\nmodel = "tiny"\ndevice = "cpu"\n{fixed}\n')
    assert main(["bench", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_a_suites_prompt_file_is_found_beside_it(tmp_path, monkeypatch):
    from wanbench.bench.suite import load_suite_file

    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "prompts.txt").write_text("a cat\n")
    suite = tmp_path / "suites" / "ml.toml"
    suite.write_text('name = "ml"\n[mlperf]\nprompts = "prompts.txt"\n[fixed]\nmodel = "tiny"\n')
    monkeypatch.chdir(tmp_path)
    assert load_suite_file(suite).mlperf.prompts == str(tmp_path / "suites" / "prompts.txt")


def test_one_process_run_ends_at_its_timeout_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wanbench.cli", "mlperf", *TINY, "--min-query-count", "100000",
                           "--timeout", "4", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "killed after the 4 s timeout; it was at " in err[0], err


def test_ctrl_c_during_loadgen_ends_the_process_at_once(tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "wanbench.cli", "mlperf", *TINY, "--min-query-count", "100000",
                             "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "loadgen-1").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # LoadGen's thread runs and samples are being served
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("wanbench: interrupted; the unfinished LoadGen run was not recorded")


def test_a_failed_sample_ends_the_run_at_once_in_one_line(tmp_path):
    # LoadGen waits for every sample it issued: a failure must not leave the process waiting with it
    script = f"""
import sys, wanbench.engine.generate as g
real, calls = g.run_once, []
def failing(session, config):
    calls.append(1)
    if len(calls) > 1:  # the warm-up runs; the first sample fails
        raise MemoryError("Unable to allocate 745. GiB")
    return real(session, config)
g.run_once = failing
from wanbench.cli import main
sys.exit(main({["mlperf", *TINY, "--out", str(tmp_path / "out")]!r}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and err[-1] == "wanbench: error: MemoryError: Unable to allocate 745. GiB", err


def test_mlperf_refuses_a_bench_suites_folder(smoke_results, capsys):
    out, _ = smoke_results
    assert main(["mlperf", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out} holds the results of suite smoke (wanbench bench)" in err[0], err
    assert not list(out.glob("loadgen-*"))
