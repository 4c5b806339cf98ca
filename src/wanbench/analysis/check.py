"""wanbench check: plausibility of published numbers from a CSV table.

Columns: model (a14b, ti2v-5b), gpu (a name in the peak table), num_gpus, width, height, frames,
steps, seconds (denoising or generation time), optional cfg (default true).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from wanbench.analysis.flops import run_flops
from wanbench.analysis.peaks import known_gpus, peak_tflops
from wanbench.analysis.plausibility import judge
from wanbench.errors import UserError
from wanbench.presets import get_preset

REQUIRED = ("model", "gpu", "num_gpus", "width", "height", "frames", "steps", "seconds")


def _truthy(text: str) -> bool:
    return text.strip().lower() not in ("false", "0", "no", "n", "off")


def check_row(row: dict[str, str], line: int, peak_override: float | None = None) -> dict[str, Any]:
    try:
        model = row["model"].strip()
        preset = get_preset(model)
        gpu, gpus = row["gpu"].strip(), int(row["num_gpus"])
        width, height, frames, steps = (int(row[k]) for k in ("width", "height", "frames", "steps"))
        seconds = float(row["seconds"])
    except (KeyError, ValueError) as exc:
        raise UserError(f"line {line}: bad value ({exc}): columns are {', '.join(REQUIRED)}[, cfg]") from None
    cfg = _truthy(row.get("cfg") or "true")
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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"no such file {path}: give a CSV with columns {', '.join(REQUIRED)}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path} lacks columns {', '.join(missing)}: columns are {', '.join(REQUIRED)}[, cfg]")
    return [check_row(row, i + 2, peak_override) for i, row in enumerate(reader)]
