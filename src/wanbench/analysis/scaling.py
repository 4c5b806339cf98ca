"""Scaling over GPUs (speedup, parallel efficiency, honest words) and over steps (a linear fit)."""

from __future__ import annotations

from dataclasses import dataclass


def speedup(time_1gpu: float, time_ngpu: float) -> float:
    return time_1gpu / time_ngpu


def efficiency(speedup_value: float, gpus: int) -> float:
    return speedup_value / gpus


def describe_efficiency(eff: float) -> str:
    """Words that match the number: only 90% to 100% may be called near-linear; above 100% is suspect."""
    if eff > 1.0:
        return "superlinear: suspicious"
    if eff >= 0.90:
        return "near-linear"
    if eff >= 0.75:
        return "good"
    if eff >= 0.50:
        return "moderate"
    return "poor"


@dataclass(frozen=True)
class StepFit:
    fixed_s: float
    per_step_s: float
    r2: float | None
    points: int


def fit_steps(steps: list[float], seconds: list[float]) -> StepFit | None:
    """Least squares time = fixed + per_step x steps; None with fewer than two distinct step counts."""
    if len(steps) != len(seconds) or len(set(steps)) < 2:
        return None
    n = len(steps)
    mean_x, mean_y = sum(steps) / n, sum(seconds) / n
    sxx = sum((x - mean_x) ** 2 for x in steps)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(steps, seconds, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in seconds)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(steps, seconds, strict=True))
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 and n > 2 else None
    return StepFit(intercept, slope, r2, n)
