"""Every verb on what an earlier verb wrote in this test run: bench -> report -> compare -> resume / retry.

The smoke suite (the README's first command on a CPU-only machine) is run once through the CLI
(conftest.smoke_results); the tests read its folder, copy it, slow it down or add noise to it the way a real
machine would, and run the next verb on that through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wanbench.cli import main


def wanbench(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wanbench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines() if line.strip()]


def rewritten(source: Path, target: Path, change) -> Path:
    """A copy of a results folder whose runs.jsonl records went through `change(record)`; results.db is left out,
    so the store rebuilds it from runs.jsonl (the recovery path a user takes after a corrupt database)."""
    target.mkdir(parents=True)
    lines = [json.dumps(change(r)) for r in records(source)]
    (target / "runs.jsonl").write_text("\n".join(lines) + "\n")
    return target


def label_of(folder: Path, gpus: int, most_steps: bool) -> str:
    """The label of the smoke suite's configuration on `gpus` processes at its fewest or most steps."""
    runs = [r for r in records(folder) if r["config"]["parallel"]["gpus"] == gpus]
    steps = (max if most_steps else min)(r["config"]["steps"] for r in runs)
    return next(r["label"] for r in runs if r["config"]["steps"] == steps)


def summary_rows(folder: Path) -> dict[str, dict]:
    return {row["label"]: row for row in json.loads((folder / "report" / "summary.json").read_text())["rows"]}


def executive_summary(folder: Path) -> list[str]:
    md = (folder / "report" / "report.md").read_text()
    return [ln for ln in md.split("## Executive summary")[1].split("\n## ")[0].splitlines() if ln.startswith("| ")]


def test_the_readme_report_has_only_plausible_or_flagged_derived_figures(smoke_results):
    out, _ = smoke_results
    summary = json.loads((out / "report" / "summary.json").read_text())
    for row in summary["rows"]:
        if row["efficiency"] is not None and row["efficiency"] > 1.0:
            assert "superlinear" in row["short_flags"], row["label"]
    for fit in summary["step_fits"]:
        sound = fit["fixed_s"] >= 0 and fit["per_step_s"] > 0 and (fit["r2"] or 0) >= 0.9
        assert sound or fit["problems"], fit
    md = (out / "report" / "report.md").read_text()
    assert "CUDA events" not in md and "Peak host memory (no GPU)" in md  # CPU results say what they measured
    # like for like: every row ran one thread per rank, so no speedup is marked for differing threads
    assert {r["env"]["torch_threads"] for r in records(out) if r["status"] == "ok"} == {1}
    assert not any("threads per rank differ" in f for row in summary["rows"] for f in row["short_flags"])


def test_the_terminal_line_states_the_reports_median(smoke_results):
    out, proc = smoke_results
    rows = summary_rows(out)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[")]
    assert len(lines) == len(rows) == 4
    for line in lines:
        label = line.split("] ", 1)[1].split(": ", 1)[0]
        g = rows[label]["generation"]
        assert f"generation {g['median']:.2f} s ({g['min']:.2f}–{g['max']:.2f}, CV {g['cv']:.1%}, n={g['n']})" in line


def test_compare_a_bench_folder_with_itself_and_with_a_slowed_copy(smoke_results, tmp_path):
    out, _ = smoke_results
    same = wanbench("compare", str(out), str(out))
    assert same.returncode == 0, same.stderr
    assert "0 regression(s) in 4 compared configuration(s)" in same.stdout

    slow_label = label_of(out, gpus=1, most_steps=True)

    def slower(record: dict) -> dict:
        if record["label"] == slow_label:
            record["phases"]["total_s"] += 5.0
            record["phases"]["vae_decode_s"] += 5.0
        return record

    slowed = rewritten(out, tmp_path / "slowed", slower)
    proc = wanbench("compare", str(out), str(slowed))
    assert proc.returncode == 1, proc.stderr
    regressions = [ln for ln in proc.stdout.splitlines() if ln.startswith("REGRESSION")]
    assert len(regressions) == 1 and slow_label in regressions[0] and "generation time" in regressions[0]
    assert (slowed / "results.db").exists()  # rebuilt from runs.jsonl


def test_compare_names_runs_that_failed_in_new_though_the_rest_ran(smoke_results, tmp_path):
    out, _ = smoke_results
    label, failed = label_of(out, gpus=2, most_steps=True), []

    def two_timed_out(record: dict) -> dict:
        if record["label"] == label and len(failed) < 2:
            failed.append(record["run_id"])
            record["status"], record["error"] = "timeout", "worker killed after the 9 s timeout"
        return record

    proc = wanbench("compare", str(out), str(rewritten(out, tmp_path / "partial", two_timed_out)))
    assert proc.returncode == 1, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if label in ln)
    assert line.startswith("REGRESSION") and "2 of 5 runs failed in NEW (0 of 5 in BASE)" in line, line


def test_compare_names_a_large_relative_slowdown_under_the_seconds_floor(smoke_results, tmp_path):
    out, _ = smoke_results
    label = label_of(out, gpus=1, most_steps=False)

    def doubled(record: dict) -> dict:
        if record["label"] == label:
            p = record["phases"]
            extra = 0.9 * (p["total_s"] - p.get("load_s", 0.0) - p.get("compile_s", 0.0))  # the generation, 1.9x
            p["total_s"] += extra
            p["vae_decode_s"] += extra
        return record

    proc = wanbench("compare", str(out), str(rewritten(out, tmp_path / "doubled", doubled)),
                    "--min-seconds", "1000")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if label in ln)
    assert line.startswith("slower") and "+90.0% generation time" in line and "floor of --min-seconds" in line
    assert "1 slower by less than the floor" in proc.stdout.splitlines()[-1]


def test_a_superlinear_row_over_a_noisy_baseline_is_flagged_in_its_own_row(smoke_results, tmp_path):
    # What the first CPU report showed: one 1-process repeat whose VAE decode took seconds instead of a tenth.
    out, _ = smoke_results
    base_label, fast_label = label_of(out, 1, most_steps=False), label_of(out, 2, most_steps=False)

    def noisy(record: dict) -> dict:
        if record["label"] == base_label:
            extra = 4.5 * (record["repeat"] + 1)  # slow and spread: CV far above the limit
            record["phases"]["total_s"] += extra
            record["phases"]["vae_decode_s"] += extra
        return record

    folder = rewritten(out, tmp_path / "noisy", noisy)
    proc = wanbench("report", str(folder))
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in executive_summary(folder) if ln.startswith(f"| {fast_label.replace('|', chr(92) + '|')} |"))
    assert "SUSPICIOUS" in row and "superlinear" in row and "baseline noisy" in row
    md = (folder / "report" / "report.md").read_text()
    assert "near-linear" not in md.split("## Methodology")[0]
    scaling = [ln for ln in md.split("## Scaling")[1].split("\n## ")[0].splitlines() if fast_label.split(" |")[0] in ln
               and "SUSPICIOUS" in ln]
    assert scaling and all("SUSPICIOUS, as the speedup" in ln for ln in scaling), scaling
    base_row = summary_rows(folder)[base_label]
    assert any(f.startswith("noisy (CV") for f in base_row["short_flags"])
    recs = json.loads((folder / "report" / "summary.json").read_text())["recommendations"]
    # the superlinear row drives no recommendation: it is named as flagged
    assert any(("left out" in r or "no recommendation" in r) and fast_label in r for r in recs)
    assert not any(f"fastest {fast_label}" in r for r in recs)
    compared = wanbench("compare", str(out), str(folder))
    line = next(ln for ln in compared.stdout.splitlines() if ln.endswith(")") and f"  {base_label}  (" in ln)
    assert "NEW noisy (CV " in line, compared.stdout  # a verdict on noisy timings says so


def test_a_noisy_rows_own_speedup_is_marked_doubtful(smoke_results, tmp_path):
    out, _ = smoke_results
    noisy_label = label_of(out, 2, most_steps=True)

    def noisy(record: dict) -> dict:
        if record["label"] == noisy_label:
            extra = 3.0 * record["repeat"]
            record["phases"]["total_s"] += extra
            record["phases"]["vae_decode_s"] += extra
            steps = record["phases"]["step_s"]  # every other step twice as long: the per-step speedup is doubtful
            record["phases"]["step_s"] = [s * (2 if i % 2 else 1) for i, s in enumerate(steps)]
            record["phases"]["denoise_s"] += sum(steps[1::2])
            record["phases"]["vae_decode_s"] -= sum(steps[1::2])
        return record

    folder = rewritten(out, tmp_path / "noisy-row", noisy)
    assert wanbench("report", str(folder)).returncode == 0
    row = summary_rows(folder)[noisy_label]
    assert row["speedup"] is not None and any(p.startswith("noisy (CV") for p in row["scaling_problems"]), row
    scaling = (folder / "report" / "report.md").read_text().split("## Scaling")[1].split("\n## ")[0]
    line = next(ln for ln in scaling.splitlines() if ln.startswith(f"| {noisy_label.replace('|', chr(92) + '|')} |"))
    assert "x — doubtful: step time varies (CV " in line, line


def test_a_row_with_more_threads_than_cpus_is_flagged_with_its_speedup(smoke_results, tmp_path):
    out, _ = smoke_results
    label = label_of(out, 2, most_steps=False)

    def one_cpu(record: dict) -> dict:
        record["env"]["cpu_count"] = 1  # two processes of one thread each on a one-CPU machine
        return record

    folder = rewritten(out, tmp_path / "one-cpu", one_cpu)
    assert wanbench("report", str(folder)).returncode == 0
    row = summary_rows(folder)[label]
    assert "oversubscribed (2 processes x 1 threads on 1 CPUs)" in row["short_flags"], row["short_flags"]
    assert "CPUs oversubscribed" in row["scaling_problems"], row["scaling_problems"]


def test_recommendations_compare_only_configurations_that_make_the_same_video(smoke_results):
    out, _ = smoke_results
    recs = json.loads((out / "report" / "summary.json").read_text())["recommendations"]
    videos = {f"tiny 96*64x9, {r['config']['steps']} steps" for r in records(out)}
    assert len(videos) == 2
    for rec in recs:
        video = rec.split(":", 1)[0]
        assert video in videos, rec
        steps = video.split(", ")[1]
        named = [part for part in rec.split(": ", 1)[1].split("; ") if " | " in part]
        assert all(f"| {steps} |" in part for part in named), rec  # never 2 steps against 8


def test_resume_skips_everything_finished(smoke_results, tmp_path):
    out, _ = smoke_results
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    proc = wanbench("bench", "--out", str(copy), "--resume", "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert "0 configurations run (4 skipped)" in proc.stdout


def _suite(tmp_path: Path, *tags: str) -> Path:
    path = tmp_path / "faults.toml"
    path.write_text('name = "faults"\nwarmup = 0\nrepeats = 1\n[fixed]\nmodel = "tiny"\ndevice = "cpu"\nsteps = 2\n'
                    + "".join(f'[[configs]]\ntag = "{t}"\n' for t in tags))
    return path


def test_a_killed_worker_is_recorded_with_its_signal_and_retried(tmp_path):
    suite, out = _suite(tmp_path, "fine", "killme"), tmp_path / "out"
    first = wanbench("bench", str(suite), "--out", str(out), "--no-report", env={"WANBENCH_FAULT": "die:0:killme"})
    assert first.returncode == 0, first.stderr
    failed = [r for r in records(out) if r["status"] != "ok"]
    assert len(failed) == 1 and "killed by signal 9 (SIGKILL" in failed[0]["error"]
    again = wanbench("bench", str(suite), "--out", str(out), "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert "1 configurations run (1 skipped), 1/1 runs ok" in again.stdout
    assert {r["status"] for r in records(out)} == {"ok"} and len(records(out)) == 2
    assert len((out / "retried.jsonl").read_text().splitlines()) == 1  # the failed record kept aside
    md = (out / "report" / "report.md").read_text()
    assert "killme" in md and "ran again with --retry-failed" in md and "killed by signal 9" in md


def test_a_bench_in_which_every_run_failed_exits_1(tmp_path):
    suite, out = _suite(tmp_path, "killme"), tmp_path / "out"
    proc = wanbench("bench", str(suite), "--out", str(out), env={"WANBENCH_FAULT": "die:0:killme"})
    assert proc.returncode == 1, proc.stderr
    assert "no run succeeded" in proc.stderr.splitlines()[-1]
    assert (out / "report" / "report.md").exists()


def test_an_interrupted_suite_says_how_to_continue_and_reports_what_finished(tmp_path):
    suite, out = _suite(tmp_path, "first", "second"), tmp_path / "out"
    env = {**os.environ, "WANBENCH_FAULT": "hang:0:second"}
    runner = subprocess.Popen([sys.executable, "-m", "wanbench.cli", "bench", str(suite), "--out", str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not ((out / "runs.jsonl").exists() and records(out)):
        time.sleep(0.5)
    time.sleep(3.0)  # the second configuration's worker is now hanging
    runner.send_signal(signal.SIGTERM)  # as a scheduler ends a job; Ctrl-C takes the same path
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 130, err
    line = next(ln for ln in err.splitlines() if ln.startswith("wanbench: interrupted"))
    assert f"Continue with: wanbench bench {suite} --out {out} --resume" in line
    md = (out / "report" / "report.md").read_text()
    assert "INTERRUPTED: the suite faults was stopped" in md and "(2 in the suite)" in md
    proc = wanbench("bench", str(suite), "--out", str(out), "--resume", "--no-report")
    assert proc.returncode == 0 and "1 configurations run (1 skipped), 1/1 runs ok" in proc.stdout, proc.stderr


def test_an_interrupt_keeps_the_repeats_finished_in_the_configuration_and_resume_counts_them_once(tmp_path):
    suite, out = tmp_path / "many.toml", tmp_path / "out"
    suite.write_text('name = "many"\nwarmup = 0\nrepeats = 500\n[fixed]\nmodel = "tiny"\ndevice = "cpu"\n'
                     'steps = 2\n')
    runner = subprocess.Popen([sys.executable, "-m", "wanbench.cli", "bench", str(suite), "--out", str(out),
                               "--no-report"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def measured() -> int:
        return sum(len(p.read_text().splitlines()) for p in (out / "workers").glob("*.jsonl")) if (
            out / "workers").is_dir() else 0

    deadline = time.time() + 180
    while time.time() < deadline and measured() < 3:
        time.sleep(0.2)
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 130, err
    kept = records(out)
    assert len(kept) >= 3 and {r["status"] for r in kept} == {"ok"}, err
    proc = wanbench("bench", str(suite), "--out", str(out), "--resume", "--repeats", str(len(kept) + 2),
                    "--no-report")
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(out / "results.db") as conn:
        repeats = [r for (r,) in conn.execute("SELECT repeat FROM runs")]
    assert sorted(repeats) == list(range(len(kept) + 2))


@pytest.mark.parametrize(("line", "message"), [
    ('steps = ["two"]', 'bad setting steps = "two" (a string): steps takes a whole number'),
    ("steps = [2.5]", "bad setting steps = 2.5 (a number): steps takes a whole number"),
    ('gpus = ["2"]', 'bad setting gpus = "2" (a string): gpus takes a whole number'),
    ("fsdp = [5]", "bad setting fsdp = 5: fsdp takes"),
    ('compile = ["false"]', 'bad setting compile = "false" (a string): compile takes true or false'),
    ("frames = [true]", "bad setting frames = true (true/false): frames takes a whole number"),
])
def test_suite_values_of_the_wrong_type_are_refused_before_anything_runs(tmp_path, capsys, line, message):
    suite = tmp_path / "bad.toml"
    suite.write_text(f'[fixed]\nmodel = "tiny"\ndevice = "cpu"\n[axes]\n{line}\n')
    assert main(["bench", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(suite) in err[0]
    assert not (tmp_path / "out").exists()


def test_a_suite_path_that_is_a_folder_or_not_text_is_one_line(tmp_path, capsys):
    (tmp_path / "binary.toml").write_bytes(bytes(range(128, 256)))
    for path, message in ((tmp_path, "is a folder, not a suite file"), (tmp_path / "binary.toml", "not UTF-8 text")):
        assert main(["bench", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_suite_repeats_of_zero_and_an_out_under_a_file_are_one_line(tmp_path, capsys):
    suite = tmp_path / "zero.toml"
    suite.write_text('repeats = 0\n[fixed]\nmodel = "tiny"\ndevice = "cpu"\n')
    assert main(["bench", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "repeats = 0: give 1 or more" in err[0] and str(suite) in err[0]
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["bench", "--preset", "smoke", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write results into" in err[0]


def test_damaged_runs_jsonl_lines_are_kept_aside_and_named(smoke_results, tmp_path, capsys):
    out, _ = smoke_results
    cut = tmp_path / "cut"
    cut.mkdir()
    text = (out / "runs.jsonl").read_text()
    (cut / "runs.jsonl").write_text(text.splitlines()[0][:200])  # one line cut short: no readable run
    assert main(["report", str(cut)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "holds no readable run" in err[-1] and "runs.unreadable.jsonl" in err[-1]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "runs.jsonl").write_text(text + '{"not": "a run"}\ngarbage\n')
    assert main(["report", str(mixed)]) == 0
    err = capsys.readouterr().err
    assert "2 unreadable line(s)" in err
    assert len((mixed / "runs.unreadable.jsonl").read_text().splitlines()) == 2
    assert len(records(mixed)) == len(text.splitlines())


@pytest.mark.parametrize("damage", ["truncated", "not sqlite"])
def test_report_and_compare_refuse_a_damaged_results_db(smoke_results, tmp_path, capsys, damage):
    out, _ = smoke_results
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (out / "results.db").read_bytes()
    (bad / "results.db").write_bytes(data[:3000] if damage == "truncated" else b"hello, not a database\n")
    for argv in (["report", str(bad)], ["compare", str(out), str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not a readable wanbench results database" in err[0]


def test_an_unwritable_report_folder_is_one_line(smoke_results, tmp_path, capsys):
    out, _ = smoke_results
    assert main(["report", str(out / "runs.jsonl"), "--out", str(tmp_path / "by-jsonl")]) == 0  # the file names it
    assert (tmp_path / "by-jsonl" / "report.md").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["report", str(out), "--out", str(blocker / "report")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the report into" in err[0]


def test_help_parses_before_any_heavy_import():
    code = ("import sys\nfrom wanbench.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "generate" in proc.stdout, proc.stderr
    version = wanbench("--version")
    assert version.returncode == 0 and version.stdout.startswith("wanbench ")


def test_compare_fails_when_new_lacks_a_configuration_of_base(smoke_results, tmp_path):
    out, _ = smoke_results
    dropped = label_of(out, gpus=2, most_steps=True)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(out) if r["label"] != dropped))
    proc = wanbench("compare", str(out), str(partial))
    assert proc.returncode == 1, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if dropped in ln)
    assert line.startswith("MISSING") and "missing in NEW" in line
    assert "1 missing in NEW" in proc.stdout.splitlines()[-1]
    assert wanbench("compare", str(out), str(partial), "--allow-missing").returncode == 0


def test_a_runs_jsonl_edited_beside_its_database_is_named(smoke_results, tmp_path):
    out, _ = smoke_results
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    lines = (copy / "runs.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["phases"]["total_s"] += 2.0
    (copy / "runs.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    proc = wanbench("compare", str(out), str(copy))
    assert "1 run(s) in" in proc.stderr and "differ from" in proc.stderr and "move results.db aside" in proc.stderr


def test_resume_with_another_suite_is_refused(smoke_results, tmp_path, capsys):
    out, _ = smoke_results
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    other = _suite(tmp_path, "fine")
    assert main(["bench", str(other), "--out", str(copy), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "holds suite smoke, not faults" in err[-1]


@pytest.mark.parametrize(("body", "message"), [
    ('[fixed]\nmodel = "tiny"\ndevice = "cpu"\n[axes]\nsize = ["96*64", "100*64"]\n', "bad size 100*64"),
    # a suite's refusals name its keys, not the CLI's flags
    ('[fixed]\nmodel = "tiny"\ndevice = "cpu"\ngpus = 2\nulysses_exchange = "head-blocks"\n',
     "ulysses_exchange head-blocks changes Ulysses' exchange, but this run is cfg 2: use it with ulysses 2 or more"),
    ('[fixed]\nmodel = "tiny"\ndevice = "cuda"\n', "device = 'cuda', but this machine has no CUDA GPU"),
    ('repeat = 2\n[fixed]\nmodel = "tiny"\n', "repeat (did you mean repeats?)"),
    ('scenario = "Offline"\n[fixed]\nmodel = "tiny"\n', "scenario (a setting of LoadGen: put it under [mlperf])"),
    ('name = "x"\n', "sets no run: give [fixed] settings"),
    ('name = "../../escape"\n[fixed]\nmodel = "tiny"\n', "names the results folder: use letters, digits"),
    ('repeats = 1000000000\n[fixed]\nmodel = "tiny"\n', "repeats = 1000000000: give 1 to 10000"),
    ('[fixed]\nmodel = "tiny"\nprompts = "p.txt"\n', "prompts is a setting of LoadGen, not of a run: put it under"),
    ('name = 5\n[fixed]\nmodel = "tiny"\n', 'name takes a string, e.g. name = "my-name"'),
    ('cooldown_s = -3\n[fixed]\nmodel = "tiny"\n', "cooldown_s = -3: give 0 or more"),
    ('[fixed]\nmodel = "tiny"\ndevice = "cpu"\nfps = 0\n', "bad fps 0: use 1 or more frames per second"),
    ('[fixed]\nmodel = "tiny"\ndevice = "cpu"\n[axes]\nsteps = [4, 4]\n', "configurations 1 and 2 are the same run"),
    ('[fixed]\nmodel = "tiny"\n[axes]\ngpus = [1, 2]\n[[configs]]\nsteps = 4\n', "give [axes] or [[configs]]"),
    ('[fixed]\nmodel = "tiny"\ndevice = "cpu"\nattention = "efficient"\n', "attention efficient needs a CUDA device"),
    ('sample_interval_s = -1\n[fixed]\nmodel = "tiny"\n', "sample_interval_s = -1: give 0 (off) or a number"),
])
def test_a_suite_that_cannot_run_whole_is_refused_before_any_worker(tmp_path, capsys, body, message):
    suite = tmp_path / "s.toml"
    suite.write_text(body)
    assert main(["bench", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_slower_parallel_row_says_so_and_only_real_baselines_read_baseline(smoke_results, tmp_path):
    out, _ = smoke_results
    base_label, two_label = label_of(out, 1, most_steps=False), label_of(out, 2, most_steps=False)

    def slowed(record: dict) -> dict:
        if record["label"] == two_label:
            record["phases"]["total_s"] *= 3  # two processes three times slower than one
        return record

    folder = rewritten(out, tmp_path / "slowed", slowed)
    proc = wanbench("report", str(folder))
    assert proc.returncode == 0, proc.stderr
    summary = executive_summary(folder)
    two = next(ln for ln in summary if ln.startswith(f"| {two_label.replace('|', chr(92) + '|')} |"))
    assert "slower than on 1 process" in two and "near-linear" not in two
    base = next(ln for ln in summary if ln.startswith(f"| {base_label.replace('|', chr(92) + '|')} |"))
    assert "| baseline |" in base


def test_a_cpu_report_gives_cpu_time_per_video_and_no_gpu_cost(smoke_results, tmp_path):
    out, _ = smoke_results
    folder = rewritten(out, tmp_path / "priced", lambda r: r)
    proc = wanbench("report", str(folder), "--gpu-hour-price", "3")
    assert proc.returncode == 0, proc.stderr
    section = (folder / "report" / "report.md").read_text().split("## Energy and cost")[1].split("\n## ")[0]
    assert "energy is not measured on CPU-only runs" in section and "no cost is given" in section
    assert "CPU core-seconds" in section  # the smoke suite fixes one thread per rank
    for row in summary_rows(folder).values():
        assert row["gpu_seconds"] is None and row["videos_per_hour_per_gpu"] is None and row["cost_per_video"] is None
