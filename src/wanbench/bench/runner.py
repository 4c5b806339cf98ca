"""The suite runner: each configuration in a fresh worker, sampled, bounded in time, stored as it ends.

For every configuration: skip what the store already holds (--resume), check that the GPUs hold no
memory from earlier workers, start the worker (torchrun for N > 1), sample memory while it runs,
kill its whole process tree past the timeout, store every repeat (failed ones with their reason),
then cool down. A failure ends that configuration only; the suite goes on.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanbench.bench.suite import SuiteConfig, expand, label
from wanbench.config import RunConfig
from wanbench.launch.process import child_env, describe_exit, free_port, run_with_timeout
from wanbench.launch.stacks import keep_stacks_if, request_stacks, stacks_env, timeout_error
from wanbench.launch.torchrun import torchrun_command
from wanbench.measure.sampler import MemorySampler, gpu_used_gb, reduce_window
from wanbench.result import RunResult
from wanbench.store import ResultsStore, config_key

CLEAN_GPU_GB = 1.0  # more than this in use before a worker starts means an earlier one left memory
CLEAN_WAIT_S = 30.0


@dataclass
class SuiteTotals:
    configs: int = 0
    configs_skipped: int = 0
    runs: int = 0
    runs_ok: int = 0
    wall_s: float = 0.0
    cooldown_s: float = 0.0
    load_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["success_rate"] = self.runs_ok / self.runs if self.runs else None
        return d


class Progress:
    """One line per configuration; live updates only on a terminal."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr  # looked up now: a redirected stderr is the one written to
        self.live = self.stream.isatty()

    def update(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()

    def clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def line(self, text: str) -> None:
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()


def gpu_indices(config: RunConfig) -> list[int]:
    if config.device == "cpu":
        return []
    if config.device.startswith("cuda:"):
        return [int(config.device.split(":")[1])]
    return list(range(config.parallel.gpus))


def wait_for_clean_gpus(indices: list[int]) -> str | None:
    """None when the GPUs are free, else the reason (after waiting up to CLEAN_WAIT_S)."""
    deadline = time.perf_counter() + CLEAN_WAIT_S
    while True:
        used = gpu_used_gb(indices)
        busy = {i: gb for i, gb in used.items() if gb > CLEAN_GPU_GB}
        if not busy:
            return None
        if time.perf_counter() > deadline:
            return "GPU memory in use before start: " + ", ".join(f"GPU {i} {gb:.1f} GB" for i, gb in busy.items())
        time.sleep(2.0)


def failure_record(config: RunConfig, status: str, error: str | None) -> dict[str, Any]:
    result = RunResult(config=config.to_dict(), status=status, error=error)
    result.phases = {"step_s": []}
    return result.to_dict()


def stacks_folder(log: Path) -> Path:
    """Where a configuration's workers dump their stacks when killed (launch/stacks.py)."""
    return log.with_suffix(".stacks")


def classify_worker_exit(timed_out: bool, returncode: int, log: Path, timeout_s: float) -> tuple[str, str]:
    if timed_out:
        return "timeout", timeout_error("worker", timeout_s, log, stacks_folder(log),
                                        fix="give a larger timeout_s in the suite, or --timeout")
    text = log.read_text(errors="replace") if log.exists() else ""
    if "out of memory" in text.lower():
        return "oom", f"worker ran out of device memory (log: {log})"
    return "failed", f"before finishing, {describe_exit(returncode, log)}"


def check_suite(suite: SuiteConfig) -> None:
    """Refuse, before any worker starts, a suite with a configuration that cannot run here (the reason of the first
    and how many more), and one that needs LoadGen where it is not installed."""
    from wanbench.errors import UserError
    from wanbench.settings import in_suite_terms

    configs = expand(suite)
    if suite.mlperf:
        from wanbench.mlperf.run import load_prompts, require_loadgen

        require_loadgen()
        load_prompts(suite.mlperf.prompts)
    problems = [(c, p) for c in configs if (p := check_config(c))]
    if problems:
        config, problem = problems[0]
        more = f" (and {len(problems) - 1} more configuration(s) that cannot run)" if len(problems) > 1 else ""
        raise UserError(f"{label(config)}: {in_suite_terms(problem)}{more}; fix or drop it in the suite")


def run_suite(suite: SuiteConfig, out: Path, resume: bool = False, progress: Progress | None = None,
              retry_failed: bool = False) -> dict:
    """Run every configuration of `suite` into `out`; `resume` skips finished repeats, `retry_failed` also runs
    again those that failed (their records are moved to retried.jsonl)."""
    progress = progress or Progress()
    configs = expand(suite)
    store = ResultsStore(out)
    held = {r.get("suite") for r in store.runs()} - {None}
    if not resume and held:
        from wanbench.errors import UserError

        store.close()
        raise UserError(f"{out} already holds results: pass --resume to continue it, or choose a new --out")
    if resume and held and suite.name not in held:
        from wanbench.errors import UserError

        store.close()
        raise UserError(f"{out} holds suite {', '.join(sorted(held))}, not {suite.name}: resume it with the suite "
                        "file or --preset that wrote it, or choose a new --out")
    totals, suite_id, started = SuiteTotals(), uuid.uuid4().hex, time.time()
    work = out / "workers"  # specs, logs and pending records of each configuration's worker
    work.mkdir(exist_ok=True)
    try:
        for index, config in enumerate(configs):
            if index and suite.cooldown_s > 0:
                time.sleep(suite.cooldown_s)
                totals.cooldown_s += suite.cooldown_s
            if retry_failed:
                store.drop_failed(config_key(config.to_dict()))
            run_configuration(suite, config, index, len(configs), store, work, totals, progress)
    except KeyboardInterrupt:
        progress.clear()  # the caller's message must not run into the live progress line
        raise
    finally:
        totals.wall_s = time.time() - started
        summary = {"suite": suite.name, **totals.to_dict()}
        store.add_suite(suite_id, suite.name, started, time.time(), summary)
        store.close()
    return summary


def run_configuration(
    suite: SuiteConfig, config: RunConfig, index: int, count: int, store: ResultsStore, work: Path,
    totals: SuiteTotals, progress: Progress,
) -> None:
    name, key = label(config), config_key(config.to_dict())
    todo = [r for r in range(suite.repeats) if r not in store.done(key)]
    head = f"[{index + 1}/{count}] {name}"
    if not todo:
        totals.configs_skipped += 1
        progress.line(f"{head}: already done, skipped")
        return
    totals.configs += 1
    problem = check_config(config)
    if problem:
        for repeat in todo:
            record = failure_record(config, "failed", problem)
            store.add_run(record, suite.name, name, repeat)
            count_run(totals, record)
        progress.line(f"{head}: invalid, not run: {problem}")
        return
    indices = gpu_indices(config)
    dirty = wait_for_clean_gpus(indices)
    stem = f"{index:03d}-{key}"
    pending, progress_file, log = work / f"{stem}.jsonl", work / f"{stem}.progress", work / f"{stem}.log"
    spec = {"config": config.to_dict(), "warmup": suite.warmup, "warmup_steps": suite.warmup_steps,
            "repeats": todo, "pending": str(pending), "progress": str(progress_file),
            "timeout_s": suite.timeout_s, "mlperf": dataclasses.asdict(suite.mlperf) if suite.mlperf else None}
    spec_path = work / f"{stem}.spec.json"
    spec_path.write_text(json.dumps(spec, ensure_ascii=False))
    cmd = worker_command(config, spec_path)
    sampler = MemorySampler(indices, suite.sample_interval_s) if suite.sample_interval_s > 0 else None

    def tick(elapsed: float) -> None:
        text = progress_file.read_text() if progress_file.exists() else "loading"
        progress.update(f"{head}: {text}, {elapsed:.0f} s")

    pending.unlink(missing_ok=True)  # left by a runner killed mid-configuration: those repeats run again
    interrupted: KeyboardInterrupt | None = None
    with open(log, "w") as log_file:
        try:
            done = run_with_timeout(cmd, suite.timeout_s, env=child_env(stacks_env(stacks_folder(log))),
                                    stdout=log_file, stderr=log_file,
                                    on_start=sampler.start if sampler else None, on_tick=tick,
                                    before_kill=lambda: request_stacks(stacks_folder(log)))
        except KeyboardInterrupt as exc:  # the worker tree is gone; what it finished is stored below
            interrupted = exc
    samples = sampler.stop() if sampler else None
    finished = finished_repeats(pending, todo)
    line = None
    if suite.mlperf:
        from wanbench.mlperf.summary import headline_text

        line = "; ".join(f"MLPerf {headline_text(item['result']['loadgen'])}" for item in finished) or None
        finished = store_mlperf(finished, suite, config, name, store, samples)
    for item in finished:
        record = item["record"]
        if samples is not None:
            window = reduce_window(samples, item["wall_start"], item["wall_end"])
            record["memory"]["gpus"] = window["gpus"]
            record["memory"]["host_rss"] = window["host_rss"]
        if dirty:
            record["flags"].append({"kind": "gpu_not_clean", "message": dirty})
        store.add_run(record, suite.name, name, item["repeat"])
        count_run(totals, record)
    if finished:
        totals.load_s += finished[0]["record"]["phases"].get("load_s", 0.0)
    if interrupted is not None:  # the repeats not finished stay to do, for --resume
        clear_worker_files(pending, spec_path, log, timed_out=False)
        raise interrupted
    missing = [r for r in todo if r not in {item["repeat"] for item in finished}]
    if missing:
        status, error = classify_worker_exit(done.timed_out, done.returncode, log, suite.timeout_s)
        for repeat in missing:
            record = failure_record(config, status, error)
            store.add_run(record, suite.name, name, repeat)
            count_run(totals, record)
    clear_worker_files(pending, spec_path, log, done.timed_out)
    progress.line(f"{head}: {line or summarise(store, key)} ({done.elapsed_s:.0f} s)")


def clear_worker_files(pending: Path, spec_path: Path, log: Path, timed_out: bool) -> None:
    """What a configuration's worker left that nobody reads once its records are stored (stacks only after a
    timeout)."""
    pending.unlink(missing_ok=True)
    shutil.rmtree(torchrun_folder(spec_path), ignore_errors=True)
    keep_stacks_if(timed_out, stacks_folder(log))


def finished_repeats(pending: Path, todo: list[int]) -> list[dict]:
    """The worker's finished lines, one per repeat it was given; a line cut short by the worker's end is dropped
    (its repeat runs again)."""
    if not pending.exists():
        return []
    items: dict[int, dict] = {}
    for line in pending.read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        repeat = item.get("repeat", todo[0] if todo else 0)
        if repeat in todo:
            items.setdefault(repeat, item)
    return list(items.values())


def check_config(config: RunConfig) -> str | None:
    """The reason a configuration cannot run, found without starting a worker; None if it can."""
    from wanbench.engine.parallel import check_runnable
    from wanbench.errors import UserError

    try:
        check_runnable(config)
    except UserError as exc:
        return str(exc)
    return _device_problem(config)


def _device_problem(config: RunConfig) -> str | None:
    """A CUDA configuration on a machine without CUDA, or with fewer GPUs than it asks for."""
    import torch

    wants_cuda = config.device.startswith("cuda")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wants_cuda and not available:
        return f"device = {config.device!r}, but this machine has no CUDA GPU: use device = \"cpu\" or \"auto\""
    if available and config.device != "cpu" and config.parallel.gpus > available * config.parallel.nnodes:
        return f"gpus = {config.parallel.gpus}, but this machine has {available} GPU(s)"
    return None


def store_mlperf(finished: list[dict], suite: SuiteConfig, config: RunConfig, name: str, store: ResultsStore,
                 samples: dict | None) -> list[dict]:
    """Store an MLPerf worker's LoadGen figures and per-sample records (each with the memory the runner sampled
    over the whole MLPerf run); returns it as repeat 0 when done."""
    from wanbench.mlperf.run import store_result

    out = []
    for item in finished:
        if samples is not None:
            window = reduce_window(samples, item["wall_start"], item["wall_end"])
            for record in item["result"]["records"]:
                record["memory"]["gpus"], record["memory"]["host_rss"] = window["gpus"], window["host_rss"]
        store_result(store, f"{suite.name}-samples", name, item["result"], item["wall_start"], item["logs"])
        marker = failure_record(config, "ok", None)
        marker["phases"] = {"total_s": item["wall_end"] - item["wall_start"], "load_s": item["result"]["load_s"],
                            "step_s": []}
        marker["kind"] = "mlperf"  # a resume marker, not a timed generation: the analysis skips it
        marker["notes"] = [f"MLPerf {suite.mlperf.scenario} run; LoadGen logs in {item['logs']}"]
        out.append({"repeat": 0, "wall_start": item["wall_start"], "wall_end": item["wall_end"], "record": marker})
    return out


def worker_command(config: RunConfig, spec_path: Path) -> list[str]:
    if config.parallel.gpus > 1:
        return torchrun_command([str(spec_path)], config.parallel, torchrun_folder(spec_path), port=free_port(),
                                module="wanbench.bench.worker")
    return [sys.executable, "-m", "wanbench.bench.worker", str(spec_path)]


def torchrun_folder(spec_path: Path) -> Path:
    """Where torchrun keeps its own files for one configuration (removed when the configuration ends)."""
    return spec_path.with_name(spec_path.name.removesuffix(".spec.json") + ".torchrun")


def count_run(totals: SuiteTotals, record: dict[str, Any]) -> None:
    totals.runs += 1
    status = record.get("status", "failed")
    totals.statuses[status] = totals.statuses.get(status, 0) + 1
    totals.runs_ok += status == "ok"


def summarise(store: ResultsStore, key: str) -> str:
    """The configuration's line: runs ok, and its generation time as the report states it (median and spread)."""
    from wanbench.analysis.summary import analyse

    records = [json.loads(r[0]) for r in store.conn.execute("SELECT record FROM runs WHERE config_key=?", (key,))]
    rows = analyse(records)["rows"]  # none for an MLPerf run's marker alone
    if not rows:
        return f"{sum(r.get('status') == 'ok' for r in records)}/{len(records)} ok"
    row = rows[0]
    parts = [f"{row.runs_ok}/{row.runs_total} ok"]
    if row.generation is not None:
        parts.append(f"generation {row.generation.describe()}" + (" NOISY" if row.generation.noisy else ""))
    if row.failures:
        parts.append(f"{row.failures[0]['status']}: {row.failures[0]['error']}")
    return ", ".join(parts)
