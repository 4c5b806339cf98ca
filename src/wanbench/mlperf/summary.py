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
        "early_stopping_p90_s": first("Early stopping 90.0th percentile estimate (s)",
                                      "Early stopping 90th percentile estimate (s)"),
        "mean_latency_s": first("Mean latency (s)"),
        "min_latency_s": first("Min latency (s)"),
        "max_latency_s": first("Max latency (s)"),
        "samples_per_second": (detail.get("result_samples_per_second")
                               or detail.get("result_qps_without_loadgen_overhead")
                               or first("Samples per second", "QPS w/o loadgen overhead")),
        "queries": detail.get("result_query_count") or first("Query count", "query_count"),
    }
