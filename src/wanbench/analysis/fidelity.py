"""Fidelity of an approximate run against the exact one (same seed and weights)."""

from __future__ import annotations

import math

import numpy as np
import torch


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """||approx - exact|| / ||exact|| (Frobenius), in float64."""
    a, e = approx.double(), exact.double()
    return float((a - e).norm() / e.norm())


def psnr(approx: np.ndarray, exact: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of frames in [0, peak]; inf when identical."""
    mse = float(np.mean((approx.astype(np.float64) - exact.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
