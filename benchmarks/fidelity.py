"""Approximate modes next to the exact path, in one process: speed-up and fidelity on the same seed.

  PYTHONPATH=src python benchmarks/fidelity.py --model a14b --size 480*832 --steps 20 \
      --modes fp8 fbc:0.05 fbc:0.1 --out benchmarks/results/fidelity-h200.json
For each mode: median step time and generation time (one warm-up run first), relative error of the
final latents and PSNR of the decoded frames against the exact run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from wanbench.analysis.fidelity import psnr, relative_error
from wanbench.analysis.stats import summarize
from wanbench.config import config_for_preset, parse_size
from wanbench.engine.generate import open_session, run_once
from wanbench.measure.env import capture_environment


def measure(config, repeats: int):
    session = open_session(config)
    if session.load_failure:
        raise SystemExit(session.load_failure[1])
    run_once(session, dataclasses.replace(config, steps=2))
    runs = [run_once(session) for _ in range(repeats)]
    gen = [r.result.phases["text_encode_s"] + r.result.phases["denoise_s"] + r.result.phases["vae_decode_s"]
           for r in runs]
    steps = [s for r in runs for s in r.result.phases["step_s"]]
    return runs[-1], summarize(gen).to_dict(), summarize(steps).to_dict()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="a14b")
    parser.add_argument("--size", default="480*832")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", nargs="+", default=["fp8", "fbc:0.05", "fbc:0.1"], help="fp8 or fbc:T")
    parser.add_argument("--compile", action="store_true",
                        help="exact path and modes compiled (FP8's activation quantisation fuses; not with fbc)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.compile and any(m.startswith("fbc") for m in args.modes):
        raise SystemExit("fidelity.py: First Block Cache does not run compiled yet: drop --compile or the fbc modes")
    width, height = parse_size(args.size)
    base = config_for_preset(args.model, width=width, height=height, frames=args.frames, steps=args.steps,
                             device=args.device, compile=args.compile)
    exact, exact_gen, exact_step = measure(base, args.repeats)
    table = [{"mode": "exact", "generation_s": exact_gen, "step_s": exact_step, "speedup": 1.0,
              "latent_rel_error": 0.0, "frames_psnr_db": None}]
    for mode in args.modes:
        change = {"fp8": "linear"} if mode == "fp8" else {"cache": mode}
        approx, gen, step = measure(dataclasses.replace(base, **change), args.repeats)
        table.append({"mode": mode, "generation_s": gen, "step_s": step,
                      "speedup": exact_gen["median"] / gen["median"],
                      "latent_rel_error": relative_error(approx.latents, exact.latents),
                      "frames_psnr_db": psnr(approx.frames, exact.frames)})
    result = {"command": " ".join(sys.argv), "env": capture_environment(), "settings": vars(args), "modes": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    for row in table:
        print(f"{row['mode']:>10s}  {row['generation_s']['median']:8.2f} s  x{row['speedup']:.2f}  "
              f"rel err {row['latent_rel_error']:.3e}  PSNR {row['frames_psnr_db']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
