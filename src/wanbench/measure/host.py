"""Host memory of this process."""

from __future__ import annotations

import resource
import sys

import psutil


def rss_gb() -> float:
    return psutil.Process().memory_info().rss / 1e9


def peak_rss_gb() -> float:
    """This process's largest resident set so far (never below the current one: the two are counted apart)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return max(peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9, rss_gb())


def total_gb() -> float:
    """The machine's memory (GB, 10^9 bytes)."""
    return psutil.virtual_memory().total / 1e9
