"""Parse LoadGen's mlperf_log_summary.txt into numbers for the results store."""

from __future__ import annotations

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


def headline(parsed: dict[str, Any]) -> dict[str, Any]:
    """The figures users compare: p90 latency (SingleStream), samples per second, validity."""
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
        "samples_per_second": first("Samples per second", "QPS w/o loadgen overhead"),
        "queries": first("Query count", "query_count"),
    }
