"""Command line: parses arguments into the config dataclasses and calls one module per verb."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from wanbench.config import PRESETS, ParallelConfig, config_for_preset, parse_guidance, parse_size
from wanbench.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as a UserError (one line, exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see 'wanbench {self.prog.split()[-1]} --help')")


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="a14b", help=f"model preset: {', '.join(PRESETS)} (default a14b)")
    p.add_argument("--weights", default="random", help="random, or a diffusers / official Wan2.2 folder")
    p.add_argument("--size", default=None, help="WIDTH*HEIGHT, e.g. 832*480 (default: the preset's)")
    p.add_argument("--frames", type=int, default=None, help="4n+1 frames (default: the preset's, 81)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's, 40)")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default 42)")
    p.add_argument("--prompt", default=None)
    p.add_argument("--negative-prompt", default=None, help="default: the official one; '' for none")
    p.add_argument("--guidance", default=None, help="HIGH,LOW guidance scales, or one for both")
    p.add_argument("--shift", type=float, default=None, help="flow shift (default: the preset's, 12.0)")
    p.add_argument("--boundary", type=float, default=None, help="expert switch at t >= boundary*1000")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"])
    p.add_argument("--vae-dtype", default=None, choices=["bfloat16", "float16", "float32"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--attention", default="auto", help="auto, cudnn, flash, sdpa, efficient or math")
    p.add_argument("--output", default="none", help="none, or a path ending in .mp4, .gif or .npy")
    p.add_argument("--json", default=None, help="write the RunResult JSON here")
    p.add_argument("--tag", default="", help="free-form label stored with the result")


def config_from_args(args: argparse.Namespace):
    overrides = {
        "weights": args.weights,
        "frames": args.frames,
        "steps": args.steps,
        "seed": args.seed,
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "shift": args.shift,
        "boundary": args.boundary,
        "dtype": args.dtype,
        "vae_dtype": args.vae_dtype,
        "device": args.device,
        "attention": args.attention,
        "output": args.output,
        "tag": args.tag,
        "parallel": ParallelConfig(),
    }
    if args.size is not None:
        overrides["width"], overrides["height"] = parse_size(args.size)
    if args.guidance is not None:
        overrides["guidance_high"], overrides["guidance_low"] = parse_guidance(args.guidance)
    return config_for_preset(args.model, **overrides)


def cmd_generate(args: argparse.Namespace) -> int:
    from wanbench.config import get_preset
    from wanbench.engine.generate import generate

    get_preset(args.model)
    config = config_from_args(args)
    generation = generate(config, progress=sys.stderr.isatty())
    result = generation.result
    if args.json:
        result.write_json(args.json)
    if result.status != "ok":
        raise UserError(result.error or "generation failed")
    p = result.phases
    print(
        f"ok: total {p['total_s']:.2f} s = load {p['load_s']:.2f} + text {p['text_encode_s']:.2f} + denoise "
        f"{p['denoise_s']:.2f} ({len(p['step_s'])} steps) + vae {p['vae_decode_s']:.2f} + save {p['save_s']:.2f}"
        f" + other {p['other_s']:.2f}" + (f"; wrote {result.output}" if result.output else "")
    )
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from wanbench.measure.env import capture_environment

    print(json.dumps(capture_environment(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wanbench", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    gen = sub.add_parser("generate", help="make one video and record where time and memory went")
    add_generate_arguments(gen)
    gen.set_defaults(func=cmd_generate)
    env = sub.add_parser("env", help="print the environment capture")
    env.set_defaults(func=cmd_env)
    return parser


def quiet_libraries() -> None:
    """Library chatter (experimental-API notices, dtype hints) is not for our users' terminals."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    quiet_libraries()
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as exc:
        print(f"wanbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("wanbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
