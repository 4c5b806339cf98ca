"""Compare two result sets per configuration: change in median generation time and peak memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wanbench.analysis.summary import ConfigRow, analyse


@dataclass(frozen=True)
class Change:
    label: str
    base_s: float | None
    new_s: float | None
    time_change: float | None  # fraction, + = slower
    base_peak_gb: float | None
    new_peak_gb: float | None
    peak_change: float | None
    regression: bool
    reason: str
    below_floor: bool = False  # slower by more than the fraction, but by fewer seconds (or GB) than the floor
    energy_change: float | None = None  # fraction of the energy per video, + = more (GPU runs that measured it)
    missing: bool = False  # in BASE, not in NEW

    @property
    def verdict(self) -> str:
        if self.missing:
            return "MISSING"
        return "REGRESSION" if self.regression else "slower" if self.below_floor else "ok"


def _match_key(row: ConfigRow) -> str:
    """Configurations match when every setting but the output path is the same (lists and all, as JSON)."""
    return json.dumps({k: v for k, v in row.config.items() if k != "output"}, sort_keys=True, default=str)


def compare(
    base: list[dict[str, Any]], new: list[dict[str, Any]], max_slowdown: float = 0.08, min_seconds: float = 0.5,
    max_memory_growth: float = 0.08, min_memory_gb: float = 0.5,
) -> list[Change]:
    """A regression is worse by more than max_slowdown (fraction) AND more than min_seconds (same for memory).

    A change past the fraction but under the floor is not hidden: it is reported as 'slower', naming the floor.
    """
    base_rows = {_match_key(r): r for r in analyse(base)["rows"]}
    new_rows = analyse(new)["rows"]
    changes = []
    seen = {_match_key(r) for r in new_rows}
    for key, old in base_rows.items():
        if key not in seen and old.generation is not None:
            changes.append(Change(old.label, old.generation.median, None, None, old.peak_gb, None, None, True,
                                  "ran in BASE, missing in NEW (--allow-missing to compare only what both hold)",
                                  missing=True))
    for row in new_rows:
        old = base_rows.get(_match_key(row))
        if old is None:
            continue
        b = old.generation.median if old.generation else None
        n = row.generation.median if row.generation else None
        reasons, minor = [], []
        time_change = (n - b) / b if b and n is not None else None
        if b is not None and n is None:
            reasons.append("failed in NEW, ran in BASE")
        elif row.runs_total and old.runs_total and (
                (row.runs_total - row.runs_ok) / row.runs_total > (old.runs_total - old.runs_ok) / old.runs_total):
            reasons.append(f"{row.runs_total - row.runs_ok} of {row.runs_total} runs failed in NEW "
                           f"({old.runs_total - old.runs_ok} of {old.runs_total} in BASE)")
        if time_change is not None and time_change > max_slowdown:
            text = f"{time_change:+.1%} generation time ({b:.2f} -> {n:.2f} s)"
            if n - b > min_seconds:
                reasons.append(text)
            else:
                minor.append(f"{text}, under the {min_seconds:g} s floor of --min-seconds")
        peak_change = None
        if old.peak_gb and row.peak_gb is not None:
            peak_change = (row.peak_gb - old.peak_gb) / old.peak_gb
            if peak_change > max_memory_growth:
                text = f"{peak_change:+.1%} peak memory ({old.peak_gb:.1f} -> {row.peak_gb:.1f} GB)"
                if row.peak_gb - old.peak_gb > min_memory_gb:
                    reasons.append(text)
                else:
                    minor.append(f"{text}, under the {min_memory_gb:g} GB floor of --min-memory-gb")
        # a change measured on noisy timings is named so: the verdict may be the noise's
        noise = [f"{side} noisy (CV {stat.cv:.1%})" for side, stat in (("BASE", old.generation),
                                                                        ("NEW", row.generation))
                 if stat is not None and stat.noisy]
        energy_change = None
        if old.energy_j and row.energy_j and old.energy_j.median > 0:
            energy_change = (row.energy_j.median - old.energy_j.median) / old.energy_j.median
        changes.append(Change(row.label, b, n, time_change, old.peak_gb, row.peak_gb, peak_change,
                              bool(reasons), "; ".join(reasons + minor + noise),
                              below_floor=bool(minor) and not reasons,
                              energy_change=energy_change))
    return changes


def compare_mlperf(base: list[dict[str, Any]], new: list[dict[str, Any]], max_slowdown: float = 0.08,
                   min_seconds: float = 0.5) -> list[Change]:
    """MLPerf results matched by scenario and label, the latest run of each on either side: p90 latency
    (SingleStream) or seconds per sample (1 / samples per second, Offline); + = slower, as for generations."""
    def seconds(result: dict[str, Any]) -> float | None:
        f = result["figures"]
        if result["scenario"] == "SingleStream":
            return f.get("p90_latency_s")
        return 1.0 / f["samples_per_second"] if f.get("samples_per_second") else None

    def latest(results: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
        return {(r["scenario"], r["label"]): r for r in sorted(results, key=lambda r: r.get("started_at") or 0)}

    old = latest(base)
    changes = []
    for key, result in latest(new).items():
        match = old.get(key)
        if match is None:
            continue
        b, n = seconds(match), seconds(result)
        change = (n - b) / b if b and n is not None else None
        metric = "p90 latency" if result["scenario"] == "SingleStream" else "seconds per sample"
        text = f"{change:+.1%} {metric} ({b:.3g} -> {n:.3g} s)" if change is not None else ""
        slower = change is not None and change > max_slowdown
        bad = slower and n - b > min_seconds
        changes.append(Change(f"MLPerf {metric}: {result['label']}", b, n, change, None, None, None, bad,
                              text if bad else f"{text}, under the {min_seconds:g} s floor of --min-seconds"
                              if slower else "", below_floor=slower and not bad))
    return changes
