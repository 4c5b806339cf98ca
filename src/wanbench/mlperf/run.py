"""wanbench mlperf: LoadGen issues queries; wanbench's engine answers them, on 1..N GPUs.

One process (rank 0) runs LoadGen in a thread; its main thread serves queries. Under torchrun every
other rank waits for commands broadcast by rank 0 and takes part in each generation. SingleStream:
one sample at a time across all GPUs. Offline: all samples at once, spread over `--dp` replicas
(each replica of gpus/dp ranks makes its own videos); completions are reported when all are done.
A sample is one prompt with its negative prompt; every sample starts from the same latent (seed).
Performance only: accuracy needs the trained weights and VBench, which this tool does not carry.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from wanbench.config import RunConfig
from wanbench.errors import UserError
from wanbench.mlperf.settings import LoadGenSettings

SYNTHETIC_PROMPTS = tuple(
    f"{subject} {action}, {style}, cinematic lighting"
    for subject, action, style in [
        ("A red fox", "runs through fresh snow in a pine forest", "slow motion"),
        ("Two astronauts", "play chess on the surface of the moon", "wide shot"),
        ("A paper boat", "drifts down a rain-soaked city street", "macro lens"),
        ("An old fisherman", "mends a net on a wooden pier at dawn", "documentary style"),
        ("A hummingbird", "hovers over a bright orange flower", "close-up"),
        ("A cyclist", "rides along a mountain ridge at sunset", "drone shot"),
        ("A chef", "flips a pancake high in a busy kitchen", "handheld camera"),
        ("Lanterns", "rise into a night sky over a lake", "long exposure"),
    ]
)


def require_loadgen() -> None:
    """MLPerf runs go through the real LoadGen: refuse before loading anything where it is not installed."""
    import importlib.util

    if importlib.util.find_spec("mlperf_loadgen") is None:
        raise UserError("the MLPerf scenarios need MLPerf LoadGen: pip install mlcommons-loadgen "
                        "(or pip install -e \".[mlperf]\" in a wanbench checkout)")


def store_result(store, suite: str, label: str, result: dict[str, Any], started_at: float,
                 logs: str | None = None) -> None:
    """The one way an MLPerf run enters a results store: each sample's engine record (under `suite`), then
    LoadGen's figures with the run's loading time and the engine's own mean latency."""
    for i, record in enumerate(result["records"]):
        store.add_run(record, suite, label, i)
    latencies = result.get("wanbench_latencies_s") or []
    figures = {**result["loadgen"], "load_s": result["load_s"], "compile_s": result.get("compile_s"),
               "wanbench_mean_latency_s": sum(latencies) / len(latencies) if latencies else None}
    if logs:
        figures["logs"] = logs
    store.add_mlperf(result["settings"]["scenario"], label, figures, result["settings"], started_at)


def load_prompts(path: str | None) -> list[str]:
    if path is None:
        return list(SYNTHETIC_PROMPTS)
    fix = "give a UTF-8 text file with one prompt a line"
    try:
        prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserError(f"no prompt file {path}: {fix}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder: {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: {fix}") from None
    if not prompts:
        raise UserError(f"{path} holds no prompts: one prompt a line")
    return prompts


def _broadcast(command: Any) -> Any:
    box = [command]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def serve(session, config: RunConfig, prompts: list[str], command: Any, key: str) -> list[tuple]:
    """Run the samples of one command on this rank's replica; returns (sample index, end time, engine record)
    for those it led."""
    from wanbench.engine.generate import run_once
    from wanbench.engine.parallel import replica_coordinates

    replica, lead = replica_coordinates(getattr(session.components, "mesh", None))
    mine = command[replica::session.dims.dp]
    done = []
    for index in mine:
        generation = run_once(session, dataclasses.replace(config, prompt=prompts[index % len(prompts)]))
        if generation.result.status != "ok":
            raise UserError(f"sample {index} failed: {generation.result.error}")
        if lead:
            done.append((index, time.time(), {**generation.result.to_dict(), "config_key": key}))
    return done


def run_mlperf(config: RunConfig, loadgen: LoadGenSettings, prompts: list[str], out: Path, timeout_s: float,
               warmup_steps: int = 0) -> dict[str, Any]:
    """Every rank calls this; rank 0 returns the parsed LoadGen summary and every replica's engine records.

    `warmup_steps` > 0 runs one untimed generation of that many steps on every rank before LoadGen
    starts (MLPerf allows untimed warm-up), so the first query does not pay for kernel selection.
    LoadGen's logs go to `out` (rank 0).
    """
    from wanbench.engine.generate import open_session, run_once

    require_loadgen()
    session = open_session(config, timeout_s=timeout_s)
    if session.load_failure:
        raise UserError(session.load_failure[1])
    if warmup_steps > 0:
        warm = run_once(session, dataclasses.replace(config, steps=warmup_steps))
        if warm.result.status != "ok":
            raise UserError(f"the warm-up generation failed: {warm.result.error}")
    # Samples differ only in the prompt the QSL gives them: stored as repeats of one configuration per scenario.
    key = sample_key(config, loadgen.scenario)
    if session.ctx.rank != 0:
        while (command := _broadcast(None)) is not None:
            _gather_done(serve(session, config, prompts, command, key))
        return {}
    return _drive_loadgen(session, config, loadgen, prompts, out, key)


def sample_key(config: RunConfig, scenario: str) -> str:
    """The configuration key of an MLPerf run's samples: the run's settings and its scenario."""
    from wanbench.store.db import config_key

    return config_key({**config.to_dict(), "mlperf_scenario": scenario})


def _gather_done(finished: list[tuple]) -> list[tuple]:
    if not dist.is_initialized():
        return finished
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, finished)
    return [item for part in everyone for item in part]


def mode_of(config: RunConfig) -> str:
    """'exact', or 'APPROXIMATE: fp8 linear' (what a result in this mode is, said in its record and report)."""
    from wanbench.config import approximations

    modes = approximations(config)
    return "APPROXIMATE: " + ", ".join(modes) if modes else "exact"


def _drive_loadgen(session, config: RunConfig, loadgen: LoadGenSettings, prompts: list[str],
                   out: Path, key: str) -> dict[str, Any]:
    import mlperf_loadgen as lg

    from wanbench.mlperf.summary import loadgen_figures

    distributed = dist.is_initialized()
    work: queue.Queue = queue.Queue()
    latencies: list[float] = []
    records: list[dict] = []

    def issue_queries(samples) -> None:
        work.put(list(samples))

    def flush_queries() -> None:
        pass

    settings = lg.TestSettings()
    settings.scenario = {"SingleStream": lg.TestScenario.SingleStream,
                         "Offline": lg.TestScenario.Offline}[loadgen.scenario]
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(loadgen.min_duration_s * 1000)
    settings.min_query_count = loadgen.min_query_count
    if loadgen.expected_latency_s:
        settings.single_stream_expected_latency_ns = int(loadgen.expected_latency_s * 1e9)
        settings.offline_expected_qps = max(1e-3, session.dims.dp / loadgen.expected_latency_s)
    if loadgen.scenario == "Offline":
        settings.performance_sample_count_override = len(prompts)
    out.mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(out)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    count = len(prompts)
    sut = lg.ConstructSUT(issue_queries, flush_queries)
    qsl = lg.ConstructQSL(count, count, lambda _: None, lambda _: None)
    test = threading.Thread(target=lambda: (lg.StartTestWithLogSettings(sut, qsl, settings, log), work.put(None)))
    test.start()
    try:
        while (samples := work.get()) is not None:
            start = time.time()
            indices = [s.index for s in samples]
            if distributed:
                _broadcast(indices)
            finished = _gather_done(serve(session, config, prompts, indices, key))
            end_by_index: dict[int, list[float]] = {}
            for index, end, record in finished:
                end_by_index.setdefault(index, []).append(end)
                records.append(record)
            for s in samples:
                latencies.append(end_by_index[s.index].pop(0) - start)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])
    except Exception as exc:
        # LoadGen waits for every sample it issued and cannot be stopped, and its thread aborts the interpreter's
        # exit: release the peers, say why in one line and end the process here
        if distributed:
            _broadcast(None)
        text = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        print(f"wanbench: error: {text}", file=sys.stderr, flush=True)
        os._exit(2)
    except KeyboardInterrupt:  # the same for Ctrl-C: LoadGen's thread would keep the process alive
        print(f"wanbench: interrupted; the unfinished LoadGen run was not recorded (its logs: {out})",
              file=sys.stderr, flush=True)
        os._exit(130)
    test.join()
    if distributed:
        _broadcast(None)
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    gpus = config.parallel.gpus
    figures, parsed = loadgen_figures(out, gpus if session.ctx.device.type == "cuda" else None)
    return {"loadgen": figures, "loadgen_summary": parsed, "wanbench_latencies_s": latencies,
            "records": records, "load_s": session.load_s, "compile_s": session.compile_s,
            "settings": {**dataclasses.asdict(loadgen), "prompts": len(prompts), "prompt_file": loadgen.prompts,
                         "gpus": gpus, "dp": session.dims.dp, "engine": config.engine, "mode": mode_of(config),
                         "parallel": session.dims.describe()}}
