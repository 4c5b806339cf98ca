"""Host memory of this process."""

from __future__ import annotations

import resource
import sys

import psutil


def rss_gb() -> float:
    return psutil.Process().memory_info().rss / 1e9


def peak_rss_gb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9
