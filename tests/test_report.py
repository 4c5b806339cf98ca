"""Report, compare and check: numbers trace to results.db, user strings are escaped, gates work."""

from __future__ import annotations

import json
import sqlite3
import statistics
import types

import pytest

from wanbench.analysis.scaling import describe_efficiency, efficiency, fit_steps, speedup
from wanbench.analysis.stats import Stat, summarize
from wanbench.cli import main
from wanbench.report import write_report
from wanbench.store import ResultsStore


def test_stats_by_hand():
    s = summarize([1.0, 2.0, 3.0, 10.0])
    assert (s.median, s.min, s.max, s.n) == (2.5, 1.0, 10.0, 4)
    mean = 4.0
    var = ((1 - mean) ** 2 + (2 - mean) ** 2 + (3 - mean) ** 2 + (10 - mean) ** 2) / 4
    assert s.cv == pytest.approx(var**0.5 / mean) and s.noisy
    assert not summarize([1.0, 1.01]).noisy


def test_scaling_words_match_the_number():
    # The seed report: 3.27x on 8 GPUs was called "near-linear".
    eff = efficiency(speedup(134.0, 41.0), 8)
    assert eff == pytest.approx(134.0 / 41.0 / 8)
    assert describe_efficiency(eff) == "poor"
    assert describe_efficiency(0.90) == "near-linear" and describe_efficiency(0.89) == "good"
    assert describe_efficiency(0.6) == "moderate"


def test_step_fit_recovers_fixed_and_per_step_cost():
    steps = [10, 10, 20, 20, 40]
    seconds = [5 + 3 * s for s in steps]
    fit = fit_steps(steps, seconds)
    assert fit.fixed_s == pytest.approx(5) and fit.per_step_s == pytest.approx(3) and fit.r2 == pytest.approx(1)
    assert fit_steps([10, 10], [1.0, 2.0]) is None


def test_check_quotes_the_seed_reports_table(tmp_path, capsys):
    table = tmp_path / "seed.csv"
    table.write_text("model,gpu,num_gpus,width,height,frames,steps,seconds\n"
                     "a14b,RTX 5090,1,480,832,81,10,9.57\n"
                     "a14b,H200,8,832,480,81,40,400\n")
    out = tmp_path / "v.json"
    assert main(["check", str(table), "--json", str(out)]) == 0
    verdicts = json.loads(out.read_text())
    assert [v["verdict"] for v in verdicts] == ["impossible", "plausible"]
    # 10 steps x 2 forwards x the analytic forward FLOPs, over 9.57 s on one GPU.
    assert verdicts[0]["implied_tflops_per_gpu"] == pytest.approx(verdicts[0]["flops"] / 9.57 / 1e12)
    assert "IMPOSSIBLE" in capsys.readouterr().out


def test_check_refuses_unknown_gpu_and_missing_columns(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,gpu,num_gpus,width,height,frames,steps,seconds\na14b,Voodoo 2,1,480,832,81,10,9\n")
    assert main(["check", str(bad)]) == 2
    assert "unknown GPU 'Voodoo 2'" in capsys.readouterr().err
    bad.write_text("model,gpu\na14b,H200\n")
    assert main(["check", str(bad)]) == 2
    assert "lacks columns" in capsys.readouterr().err


@pytest.mark.parametrize(("row", "flags", "message"), [
    ("a14b,H100,1,1280,720,81,40,nan,true", [], "bad seconds 'nan'"),
    ("a14b,H100,0,1280,720,81,40,100,true", [], "bad num_gpus 0"),
    ("a14b,H100,1,1280,720,81,-20,100,true", [], "bad steps -20"),
    ("a14b,H100,1,1280,720,80,40,100,true", [], "1280x720x80 is no size a14b makes"),
    ("a14b,H100,1,1280,720,81,40,100,maybe", [], "bad cfg 'maybe'"),
    ("a14b,H100,1,1280,720,81,40,,true", [], "line 2: no seconds: give the measured time in seconds"),
    ("a14b,H100,1.5,1280,720,81,40,100,true", [], "line 2: bad num_gpus '1.5': give a whole number of GPUs"),
    ("a14b,H100,1,1280,720,81,40,100,true", ["--peak-tflops", "-1"], "bad --peak-tflops -1"),
    ("a14b,H100,1,1280,720,81,40,100,true", ["--json", "{tmp}"], "is a folder: give a file name"),
])
def test_check_refuses_rows_and_flags_that_cannot_be_judged(tmp_path, capsys, row, flags, message):
    table = tmp_path / "t.csv"
    table.write_text(f"model,gpu,num_gpus,width,height,frames,steps,seconds,cfg\n{row}\n")
    assert main(["check", str(table), *(f.format(tmp=tmp_path) for f in flags)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_report_refuses_a_file_that_is_not_the_stores(smoke_results, tmp_path, capsys):
    out, _ = smoke_results
    other = tmp_path / "copy.db"
    other.write_bytes((out / "results.db").read_bytes())
    assert main(["report", str(other), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file: give the folder written by" in err[0], err


def test_report_numbers_trace_to_results_db(smoke_results):
    folder, _ = smoke_results
    paths = write_report(folder, folder / "report-test")
    md = (folder / "report-test" / "report.md").read_text()
    html = (folder / "report-test" / "report.html").read_text()
    assert (folder / "report-test" / "speedup.png").exists() and (folder / "report-test" / "memory.png").exists()
    with sqlite3.connect(folder / "results.db") as conn:
        records = [json.loads(r[0]) for r in conn.execute("SELECT record FROM runs WHERE status='ok'")]
    by_label: dict[str, list[float]] = {}
    for r in records:
        p = r["phases"]
        by_label.setdefault(r["label"], []).append(p["total_s"] - p["load_s"] - p["compile_s"])
    for label, values in by_label.items():
        median = f"{statistics.median(values):.2f} s"
        line = next(line for line in md.splitlines() if line.startswith("| " + label.replace("|", "\\|") + " |"))
        assert median in line, (label, median, line)
    summary = json.loads((folder / "report-test" / "summary.json").read_text())
    assert summary["runs_total"] == 20 and summary["success_rate"] == 1.0
    assert "Executive summary" in html and "<table>" in html and "data:image/png;base64," in html
    assert len(paths) >= 4


def test_html_escapes_user_strings_and_failures_count(tmp_path):
    evil = '<script>alert("x")</script>'
    with ResultsStore(tmp_path) as store:
        store.add_run({"config": {"model": "tiny", "prompt": evil, "width": 96, "height": 64, "frames": 9,
                                  "steps": 2, "parallel": {"gpus": 1}}, "status": "oom",
                       "error": f"out of memory {evil}", "phases": {}, "memory": {}}, "s", f"label {evil}", 0)
    write_report(tmp_path)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    md = (tmp_path / "report" / "report.md").read_text()
    assert "0 ok (success rate 0%)" in md and "oom" in md


def _fake_record(seconds: float, peak: float, gpus: int = 1):
    return {"config": {"model": "a14b", "width": 832, "height": 480, "frames": 81, "steps": 10, "weights": "random",
                       "parallel": {"gpus": gpus, "strategy": "auto"}},
            "status": "ok", "phases": {"total_s": seconds + 2, "load_s": 2.0, "compile_s": 0.0, "denoise_s": seconds,
                                       "step_s": [seconds / 10] * 10, "other_s": 0.0},
            "memory": {"ranks": [{"max_allocated_gb": peak, "capacity_gb": 141.0}]},
            "env": {"gpu_names": ["NVIDIA H200"]}}


def test_environment_rows_name_tuning_variables(tmp_path):
    evil = '<b onmouseover="x">'
    with ResultsStore(tmp_path) as store:
        for i, tuning in enumerate(({}, {"NCCL_MAX_NCHANNELS": "32", "NCCL_DEBUG": evil})):
            record = _fake_record(60.0, 70.0)
            record["env"] = {**record["env"], "hostname": "h", "tuning_env": tuning}
            store.add_run(record, "s", f"run {i}", 0)
    write_report(tmp_path)
    md = (tmp_path / "report" / "report.md").read_text()
    section = md.split("## Environment")[1].split("\n## ")[0]
    # Runs under different process-wide settings are not folded into one environment row.
    assert "| none |" in section and "NCCL_MAX_NCHANNELS=32" in section
    html = (tmp_path / "report" / "report.html").read_text()
    assert evil not in html and "&lt;b onmouseover=" in html


def test_compare_gates_on_regressions(tmp_path, capsys):
    base, new = tmp_path / "base", tmp_path / "new"
    for folder, seconds, peak in ((base, 60.0, 70.0), (new, 66.0, 70.2)):
        with ResultsStore(folder) as store:
            for i in range(2):
                store.add_run(_fake_record(seconds, peak), "s", "a14b 10 steps", i)
    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "+10.0% generation time" in out
    assert main(["compare", str(base), str(new), "--max-slowdown", "0.2"]) == 0


def test_impossible_time_is_flagged_in_the_report(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.add_run(_fake_record(1.0, 50.0), "s", "too fast", 0)
    write_report(tmp_path)
    md = (tmp_path / "report" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| too fast"))
    assert "IMPOSSIBLE" in row


def test_compare_gates_on_mlperf_latency(tmp_path, capsys):
    base, new = tmp_path / "base", tmp_path / "new"
    for folder, p90 in ((base, 50.0), (new, 57.4)):
        with ResultsStore(folder) as store:
            store.add_run(_fake_record(60.0, 70.0), "s", "a14b 10 steps", 0)
            store.add_mlperf("SingleStream", "a14b 720p", {"p90_latency_s": p90}, {}, 0.0)
    assert main(["compare", str(base), str(new)]) == 1
    assert "+14.8% p90 latency (50 -> 57.4 s)" in capsys.readouterr().out
    # the latest run of a label on each side; a folder against itself changes nothing
    with ResultsStore(new) as store:
        store.add_mlperf("SingleStream", "a14b 720p", {"p90_latency_s": 51.0}, {}, 1.0)
        store.add_mlperf("Offline", "tiny", {"samples_per_second": 4.5}, {}, 1.0)
    assert main(["compare", str(new), str(new)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "MLPerf" in line]
    assert len(lines) == 2 and all(" +0.0% " in line for line in lines), lines
    with ResultsStore(base) as store:
        store.add_mlperf("Offline", "tiny", {"samples_per_second": 13.5}, {}, 1.0)
    assert main(["compare", str(base), str(new)]) == 0  # Offline 3x slower, but under the 0.5 s floor: 'slower'
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "seconds per sample" in line]
    assert line.startswith("slower") and "+200.0% seconds per sample" in line


def test_plot_legends_keep_what_differs_between_labels():
    from wanbench.report.plots import distinct_labels

    names = distinct_labels(["a14b | 480*832x81 | 10 steps | 2 GPU | ulysses2",
                             "a14b | 480*832x81 | 10 steps | 2 GPU | ulysses2 | fsdp dit,t5",
                             "a14b | 480*832x81 | 10 steps | 1 GPU"])
    assert list(names.values()) == ["2 GPU | ulysses2", "2 GPU | ulysses2 | fsdp dit,t5", "1 GPU"]
    assert distinct_labels(["only | one"]) == {"only | one": "only | one"}


def test_allocator_peaks_are_the_busiest_rank_of_each_phase():
    from wanbench.analysis.summary import make_row

    runs = []
    for denoise in ((41.5, 40.0), (41.0, 43.25)):  # two runs, two ranks each
        record = _fake_record(30.0, 50.0, gpus=2)
        record["memory"]["ranks"] = [{"max_allocated_gb": 50.0, "phase_peak_allocated_gb": {"load": 30.0,
                                                                                            "denoise": d}}
                                     for d in denoise]
        runs.append(record)
    runs[1]["memory"]["ranks"][1]["host_peak_rss_gb"] = 105.4
    runs[0]["memory"]["host_peak_rss_gb"] = 3.1
    row = make_row(runs)
    assert row.denoise_allocated_gb == 43.25 and row.load_allocated_gb == 30.0
    assert row.host_peak_gb == 105.4
    assert make_row([_fake_record(30.0, 50.0)]).denoise_allocated_gb is None


def test_a_card_is_recommended_only_if_loading_fits_too():
    from wanbench.analysis.stats import Stat
    from wanbench.analysis.summary import ConfigRow, recommendations

    def row(label: str, seconds: float, peak_gb: float, load_gb: float) -> ConfigRow:
        stat = Stat(median=seconds, min=seconds, max=seconds, cv=0.0, n=2)
        config = {"parallel": {"offload": "group" if "offload" in label else "none"}}
        return ConfigRow(label=label, key=label, config=config, gpus=1, gpu_name="H200", runs_total=2, runs_ok=2,
                         failures=[], generation=stat, denoise=None, step=None, load=None, compile=None, total=None,
                         other_max_s=None, peak_gb=peak_gb, peak_source="NVML used memory", avg_gb=None,
                         capacity_gb=150.0, mfu=None, implied_tflops_per_gpu=None, verdict="plausible",
                         load_allocated_gb=load_gb, host_peak_gb=128.1)

    # generation fits 24 GB, but loading held 69 GB (random weights built on the GPU, then offloaded)
    built_on_gpu = row("offload, built on the GPU", 80.0, peak_gb=20.2, load_gb=69.3)
    in_host_memory = row("offload, built in host memory", 81.0, peak_gb=20.2, load_gb=0.6)
    lines = recommendations([row("resident", 70.0, peak_gb=90.0, load_gb=69.3), built_on_gpu])
    assert not any("24 GB" in line for line in lines)
    assert any("fastest on a 80 GB card (H100)" in line and "69.3 GB while loading" in line
               and "built on the GPU" in line for line in lines)
    lines = recommendations([row("resident", 70.0, peak_gb=83.7, load_gb=69.3), in_host_memory])
    assert any("fastest on a 24 GB card (RTX 4090)" in line and "host memory" in line for line in lines)
    # the offloaded row's host memory is named (a 24 GB card needs a host that holds the model); not the resident's
    assert any("fastest on a 24 GB card" in line and "needs 128 GB of host memory" in line for line in lines)
    assert not any("fastest on a 80 GB card" in line and "of host memory" in line for line in lines)
    # the card's size is said once, plainly
    assert not any("GB card (H100), 85.5 GB" in line or "fits a" in line for line in lines)


def test_a_step_fit_whose_slope_is_not_the_timed_step_is_unreliable():
    from wanbench.analysis.scaling import StepFit
    from wanbench.analysis.summary import fit_problems

    step = Stat(median=0.007, min=0.007, max=0.0075, cv=0.01, n=40)
    member = types.SimpleNamespace(generation=Stat(0.3, 0.3, 0.3, 0.0, 5), step=step)
    problems = fit_problems(StepFit(fixed_s=0.16, per_step_s=0.009, r2=0.99, points=10), [member, member])
    assert problems == ["per-step cost 0.009 s against 0.007 s measured per step"]
    assert fit_problems(StepFit(fixed_s=0.16, per_step_s=0.0071, r2=0.99, points=10), [member]) == []
