"""wanbench check: plausibility of published numbers from a CSV table.

Columns: model (a14b, ti2v-5b), gpu (a name in the peak table), num_gpus, width, height, frames,
steps, seconds (denoising or generation time), optional cfg (default true).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from wanbench.analysis.flops import run_flops
from wanbench.analysis.peaks import known_gpus, peak_tflops
from wanbench.analysis.plausibility import judge
from wanbench.errors import UserError
from wanbench.presets import get_preset

REQUIRED = ("model", "gpu", "num_gpus", "width", "height", "frames", "steps", "seconds")


def _flag(text: str, line: int) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "y", "on"):
        return True
    if value in ("false", "0", "no", "n", "off"):
        return False
    raise UserError(f"line {line}: bad cfg {text!r}: give true or false")


def check_row(row: dict[str, str], line: int, peak_override: float | None = None) -> dict[str, Any]:
    def value(column: str, kind: type, wanted: str):
        text = (row.get(column) or "").strip()
        try:
            return kind(text)
        except ValueError:
            raise UserError(f"line {line}: bad {column} {text!r}: give {wanted}" if text else
                            f"line {line}: no {column}: give {wanted}") from None

    model = (row.get("model") or "").strip()
    preset = get_preset(model)
    gpu = (row.get("gpu") or "").strip()
    gpus = value("num_gpus", int, "a whole number of GPUs")
    width, height, frames, steps = (value(k, int, f"a whole number of {k}") for k in ("width", "height", "frames",
                                                                                        "steps"))
    seconds = value("seconds", float, "the measured time in seconds")
    for name, value in (("num_gpus", gpus), ("width", width), ("height", height), ("frames", frames),
                        ("steps", steps)):
        if value < 1:
            raise UserError(f"line {line}: bad {name} {value}: give a whole number of 1 or more")
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"line {line}: bad seconds {row['seconds']!r}: give the measured time, a positive number")
    multiple, stride = preset.size_multiple, preset.vae.stride_t
    if width % multiple or height % multiple or (frames - 1) % stride:
        raise UserError(f"line {line}: {width}x{height}x{frames} is no size {model} makes: width and height are "
                        f"multiples of {multiple}, frames {stride}n+1")
    cfg = _flag(row.get("cfg") or "true", line)
    peak = peak_override or peak_tflops(gpu)
    if peak is None:
        raise UserError(f"line {line}: unknown GPU {gpu!r}: use one of {', '.join(known_gpus())}")
    flops = run_flops(preset, width, height, frames, steps, cfg).denoise
    verdict = judge(flops, seconds, gpus, peak)
    return {"line": line, "model": model, "gpu": gpu, "num_gpus": gpus, "width": width, "height": height,
            "frames": frames, "steps": steps, "seconds": seconds, "cfg": cfg, "flops": flops,
            "implied_tflops_per_gpu": verdict.implied_tflops_per_gpu, "peak_tflops": peak,
            "implied_mfu": verdict.mfu, "verdict": verdict.verdict}


def check_table(path: str | Path, peak_override: float | None = None) -> list[dict[str, Any]]:
    path = Path(path)
    fix = f"give a CSV with columns {', '.join(REQUIRED)}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"no such file {path}: {fix}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder: {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: {fix}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path} lacks columns {', '.join(missing)}: columns are {', '.join(REQUIRED)}[, cfg]")
    return [check_row(row, i + 2, peak_override) for i, row in enumerate(reader)]
