"""Parse LoadGen's logs into numbers for the results store.

The summary file rounds rates to two decimals (a 70 s SingleStream sample reads "QPS: 0.01"), so
rates and counts come from mlperf_log_detail.txt's full-precision `result_*` entries when present.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


def parse_summary(path: str | Path) -> dict[str, Any]:
    """Every 'key : value' line; latencies in ns are also given in seconds under '<key> (s)'."""
    out: dict[str, Any] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if ":" not in line or line.startswith(("=", "*")):
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lstrip("* ").strip(), value.strip()
        if not key or not value:
            continue
        number = float(value) if _NUMBER.match(value) else None
        out[key] = number if number is not None else value
        if number is not None and key.endswith("(ns)"):
            out[key.replace("(ns)", "(s)")] = number / 1e9
    return out


def parse_detail(path: str | Path) -> dict[str, Any]:
    """The `:::MLLOG {json}` lines of mlperf_log_detail.txt as key -> value (last one wins)."""
    out: dict[str, Any] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG"):
            try:
                entry = json.loads(line[len(":::MLLOG"):])
            except json.JSONDecodeError:
                continue
            out[entry.get("key")] = entry.get("value")
    return out


def why_invalid(path: str | Path) -> str | None:
    """LoadGen's reasons for an INVALID result, from the summary: the conditions it did not satisfy and its
    recommendations ('early stopping not satisfied: Need to process at least 64 queries for early stopping.')."""
    unmet, advice, in_advice = [], [], False
    for line in Path(path).read_text(errors="replace").splitlines():
        text = line.strip()
        key, _, value = text.partition(":")
        if key.strip().endswith("satisfied") and value.strip().upper() == "NO":
            unmet.append(key.strip().lower().replace(" satisfied", "") + " not satisfied")
        in_advice = in_advice or text.startswith("Recommendations")
        if in_advice and text.startswith("* "):
            advice.append(text[2:])
        elif in_advice and not text:
            in_advice = False
    reasons = "; ".join(unmet)
    if any(a.startswith("Increase expected QPS") for a in advice):  # what that advice is in wanbench's flags
        advice.append("(wanbench: expected QPS = replicas / --expected-latency: give about the seconds per sample)")
    return (f"{reasons}: {' '.join(advice)}" if advice else reasons) or None


def loadgen_figures(folder: str | Path, gpus: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline figures, the parsed summary) from LoadGen's logs in folder; with `gpus` (a GPU run), also
    GPU-seconds per video = GPUs / samples per second."""
    folder = Path(folder)
    parsed = parse_summary(folder / "mlperf_log_summary.txt")
    detail_path = folder / "mlperf_log_detail.txt"
    figures = headline(parsed, parse_detail(detail_path) if detail_path.exists() else {})
    rate = figures["samples_per_second"]
    figures["gpu_seconds_per_video"] = gpus / rate if rate and gpus else None
    if figures["valid"] != "VALID":
        figures["invalid_because"] = why_invalid(folder / "mlperf_log_summary.txt")
    return figures, parsed


def _seconds(seconds: Any, nanoseconds: Any) -> float | None:
    """LoadGen writes some latencies with '(ns)' in the key and some (the early-stopping estimate) without a unit,
    in nanoseconds too."""
    if isinstance(seconds, float):
        return seconds
    return nanoseconds / 1e9 if isinstance(nanoseconds, float) else None


def headline(parsed: dict[str, Any], detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figures users compare: p90 latency (SingleStream), samples per second, validity."""
    detail = detail or {}

    def first(*keys: str):
        return next((parsed[k] for k in keys if k in parsed), None)

    return {
        "scenario": first("Scenario"),
        "mode": first("Mode"),
        "valid": first("Result is"),
        "p90_latency_s": first("90.0th percentile latency (s)", "90.00 percentile latency (s)"),
        "early_stopping_p90_s": _seconds(first("Early stopping 90.0th percentile estimate (s)",
                                               "Early stopping 90th percentile estimate (s)"),
                                         first("Early stopping 90.0th percentile estimate",
                                               "Early stopping 90th percentile estimate")),
        "mean_latency_s": first("Mean latency (s)"),
        "min_latency_s": first("Min latency (s)"),
        "max_latency_s": first("Max latency (s)"),
        "samples_per_second": (detail.get("result_samples_per_second")
                               or detail.get("result_qps_without_loadgen_overhead")
                               or first("Samples per second", "QPS w/o loadgen overhead")),
        "queries": detail.get("result_query_count") or first("Query count", "query_count"),
    }


def headline_text(f: dict) -> str:
    """LoadGen's verdict and the figures of its scenario, rounded as the report rounds them."""
    verdict = f["valid"] if f["valid"] == "VALID" else f"{f['valid']} ({f.get('invalid_because') or 'see its log'})"
    parts = [verdict]
    if f.get("scenario") == "SingleStream" and f.get("p90_latency_s") is not None:
        parts.append(f"p90 latency {f['p90_latency_s']:.2f} s")
    if f.get("samples_per_second"):
        parts.append(f"{f['samples_per_second']:.4g} samples/s")
    if f.get("gpu_seconds_per_video") is not None:
        parts.append(f"{f['gpu_seconds_per_video']:.1f} GPU-seconds per video")
    return ", ".join(parts)
