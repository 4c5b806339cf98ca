"""Is a time physically possible? Implied rate against the GPU's peak dense bf16 rate."""

from __future__ import annotations

from dataclasses import dataclass

IMPOSSIBLE_MFU = 1.00
SUSPICIOUS_MFU = 0.85


@dataclass(frozen=True)
class Verdict:
    implied_tflops_per_gpu: float
    mfu: float | None
    verdict: str  # plausible | suspicious | impossible | unknown


def judge(flops: float, seconds: float, num_gpus: int, peak_tflops: float | None) -> Verdict:
    if seconds <= 0:
        return Verdict(float("inf"), None, "impossible")
    implied = flops / seconds / num_gpus / 1e12
    if peak_tflops is None:
        return Verdict(implied, None, "unknown")
    mfu = implied / peak_tflops
    if mfu > IMPOSSIBLE_MFU:
        verdict = "impossible"
    elif mfu > SUSPICIOUS_MFU:
        verdict = "suspicious"
    else:
        verdict = "plausible"
    return Verdict(implied, mfu, verdict)
