"""Does the memory sampler slow the run? The same configuration with sampling off and at 0.5 s / 0.05 s.

  PYTHONPATH=src python benchmarks/sampler_overhead.py --out benchmarks/results/sampler-overhead-cpu.json
Runs `wanbench bench` three times (tiny on the CPU unless --model/--device say otherwise), interleaved,
and compares the median generation time. On a GPU machine pass --model a14b --device cuda --steps 4.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

from wanbench.bench.runner import Progress, run_suite
from wanbench.bench.suite import SuiteConfig
from wanbench.measure.env import capture_environment
from wanbench.store import ResultsStore


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    base = SuiteConfig(name="sampler", fixed={"model": args.model, "device": args.device, "steps": args.steps},
                       warmup=1, repeats=args.repeats, timeout_s=1800)
    times: dict[str, list[float]] = {"off": [], "0.5": [], "0.05": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for name in times:
                interval = 0.0 if name == "off" else float(name)
                suite = dataclasses.replace(base, sample_interval_s=interval)
                folder = Path(tmp) / f"{name}-{round_index}"
                run_suite(suite, folder, progress=Progress(io.StringIO()))
                with ResultsStore(folder) as store:
                    for r in store.runs():
                        p = r["phases"]
                        times[name].append(p["total_s"] - p["load_s"] - p["compile_s"])
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "command": " ".join(sys.argv), "env": capture_environment(),
        "settings": vars(args), "generation_s": times, "median_s": medians,
        "overhead_vs_off": {k: medians[k] / medians["off"] - 1 for k in ("0.5", "0.05")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({"median_s": medians, "overhead_vs_off": result["overhead_vs_off"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
