"""The bench worker: one configuration in a fresh process (or torchrun group).

Loads once (the load phase is measured), runs the warm-up runs (not recorded), then each counted
repeat, appending each finished record to the pending file at once (rank 0), so that a worker
killed part-way keeps what it finished. Usage: python -m wanbench.bench.worker SPEC.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from wanbench.config import RunConfig


def append_line(path: Path, data: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(data, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def warmup_steps(spec: dict, config: RunConfig) -> int:
    """Steps of a warm-up run: the suite's warmup_steps, 0 meaning the configuration's own."""
    return spec["warmup_steps"] or config.steps


def run_worker(spec: dict) -> int:
    from wanbench.engine.generate import open_session, run_once
    from wanbench.launch.distributed import shutdown_distributed

    config = RunConfig.from_dict(spec["config"])
    pending, progress = Path(spec["pending"]), Path(spec["progress"])
    is_main = int(os.environ.get("RANK", "0")) == 0

    def report(text: str) -> None:
        if is_main:
            progress.write_text(text)

    if spec.get("mlperf"):
        return run_mlperf_worker(spec, config, pending, is_main)
    clean = False
    try:
        session = open_session(config, timeout_s=spec["timeout_s"])
        warm_config = dataclasses.replace(config, steps=warmup_steps(spec, config))
        for i in range(spec["warmup"]):
            report(f"warm-up {i + 1}/{spec['warmup']}")
            warm = run_once(session, warm_config)
            if warm.result.status != "ok":
                break  # the counted runs will record the failure
        for repeat in spec["repeats"]:
            report(f"repeat {repeat + 1}")
            wall_start = time.time()
            generation = run_once(
                session, on_step=lambda i, r=repeat: report(f"repeat {r + 1} step {i + 1}/{config.steps}")
            )
            record = generation.result.to_dict()
            if is_main:
                append_line(pending, {"repeat": repeat, "wall_start": wall_start, "wall_end": time.time(),
                                      "record": record})
        clean = True
    finally:
        shutdown_distributed(clean=clean)
    return 0


def run_mlperf_worker(spec: dict, config: RunConfig, pending: Path, is_main: bool) -> int:
    """The configuration as an MLPerf run: LoadGen drives the engine; one pending line holds it all."""
    from wanbench.launch.distributed import shutdown_distributed
    from wanbench.mlperf.run import load_prompts, run_mlperf
    from wanbench.mlperf.settings import LoadGenSettings

    loadgen = LoadGenSettings(**spec["mlperf"])
    out = pending.with_suffix(".mlperf")
    out.mkdir(parents=True, exist_ok=True)
    wall_start = time.time()
    result = None
    try:
        result = run_mlperf(config, loadgen, load_prompts(loadgen.prompts), out, spec["timeout_s"],
                            warmup_steps(spec, config) if spec["warmup"] else 0)
    finally:
        shutdown_distributed(clean=result is not None)
    if is_main and result:
        append_line(pending, {"result": result, "logs": str(out), "wall_start": wall_start, "wall_end": time.time()})
    return 0


def main() -> int:
    from wanbench.launch.process import die_with_parent, quiet_libraries
    from wanbench.launch.stacks import dump_stacks_on_request

    die_with_parent()  # the runner (or torchrun) gone means nobody will read our results
    dump_stacks_on_request()
    quiet_libraries()
    spec = json.loads(Path(sys.argv[1]).read_text())
    return run_worker(spec)


if __name__ == "__main__":
    from wanbench.launch.process import exit_process

    exit_process(main())
