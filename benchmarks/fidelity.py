"""Approximate modes next to the exact path, in one process: speed-up and fidelity on the same seed.

  PYTHONPATH=src python benchmarks/fidelity.py --model a14b --size 480*832 --steps 20 \
      --modes fp8:linear fbc:0.05 --out benchmarks/results/fidelity-h200.json
For each mode: median step time, generation time and energy (one warm-up run first), relative error of the
final latents and PSNR of the decoded frames against the exact run. Each mode compiles where the engine's
default does (exact and FP8 on CUDA; First Block Cache runs eager). With random weights the error is numerical
error, not visual quality.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
from pathlib import Path

from wanbench.analysis.fidelity import psnr, relative_error
from wanbench.analysis.stats import summarize
from wanbench.engine.generate import open_session, run_once
from wanbench.measure.env import capture_environment
from wanbench.settings import config_from_settings


def measure(config, repeats: int):
    import torch

    session = open_session(config)
    if session.load_failure:
        raise SystemExit(session.load_failure[1])
    run_once(session, dataclasses.replace(config, steps=2))
    runs = [run_once(session) for _ in range(repeats)]
    for run in runs:
        if run.result.status != "ok":
            raise SystemExit(f"{config.fp8} {config.cache}: {run.result.status}: {run.result.error}")
    gen = [r.result.phases["text_encode_s"] + r.result.phases["denoise_s"] + r.result.phases["vae_decode_s"]
           for r in runs]
    steps = [s for r in runs for s in r.result.phases["step_s"]]
    energy = [r.result.energy["joules"] for r in runs if r.result.energy.get("measured")]
    last = runs[-1]
    last.latents = last.latents.float().cpu() if last.latents is not None else None
    info = {"load_s": session.load_s, "compile_s": session.compile_s, "compiled": config.compile,
            "energy_j": summarize(energy).to_dict() if energy else None, "notes": last.result.notes,
            "peak_allocated_gb": max((r.get("max_allocated_gb") or 0.0) for r in last.result.memory["ranks"])}
    del session, runs
    gc.collect()
    if torch.cuda.is_available():  # the next mode loads its own copy of the model
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    return last, summarize(gen).to_dict(), summarize(steps).to_dict(), info


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="a14b")
    parser.add_argument("--size", default=None, help="default: 480*832 (a14b), the preset's otherwise")
    parser.add_argument("--frames", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", nargs="+", default=["fp8:linear", "fbc:0.05"],
                        help="fp8:MODE (an --fp8 value) or fbc:THRESHOLD")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.size is None and args.model == "a14b":
        args.size = "480*832"

    def config(**change):  # the CLI's own path: the engine's defaults (compile on CUDA) where not set
        given = {"model": args.model, "size": args.size, "frames": args.frames, "steps": args.steps,
                 "device": args.device, **change}
        return config_from_settings({k: v for k, v in given.items() if v is not None})

    exact, exact_gen, exact_step, exact_info = measure(config(), args.repeats)
    table = [{"mode": "exact", "generation_s": exact_gen, "step_s": exact_step, "speedup": 1.0,
              "step_speedup": 1.0, "latent_rel_error": 0.0, "frames_psnr_db": None, **exact_info}]
    for mode in args.modes:
        kind, _, value = mode.partition(":")
        change = {"fp8": value} if kind == "fp8" else {"cache": mode}
        try:
            approx, gen, step, info = measure(config(**change), args.repeats)
        except (SystemExit, Exception) as exc:  # one mode failing leaves the others measured
            print(f"{mode}: failed: {exc}", flush=True)
            table.append({"mode": mode, "error": f"{type(exc).__name__}: {exc}"[:2000]})
            continue
        table.append({"mode": mode, "generation_s": gen, "step_s": step,
                      "speedup": exact_gen["median"] / gen["median"],
                      "step_speedup": exact_step["median"] / step["median"],
                      "latent_rel_error": relative_error(approx.latents, exact.latents),
                      "frames_psnr_db": psnr(approx.frames, exact.frames), **info})
        print(f"{mode}: {step['median']:.3f} s per step", flush=True)
    result = {"command": " ".join(sys.argv), "env": capture_environment(), "settings": vars(args), "modes": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    for row in table:
        if "error" in row:
            print(f"{row['mode']:>18s}  failed: {row['error'][:200]}")
            continue
        energy = f"{row['energy_j']['median'] / 1000:.1f} kJ" if row["energy_j"] else "energy n/a"
        print(f"{row['mode']:>18s}  step {row['step_s']['median']:.3f} s  generation "
              f"{row['generation_s']['median']:8.2f} s  x{row['speedup']:.2f}  {energy}"
              f"  rel err {row['latent_rel_error']:.3e}  PSNR {row['frames_psnr_db']}")
    return 1 if any("error" in row for row in table) else 0  # the others stay measured in --out


if __name__ == "__main__":
    sys.exit(main())
