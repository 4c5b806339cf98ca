"""Device-synchronised timers: phases on the host clock, denoising steps on device events."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Wall time of named phases, each bracketed by device synchronisation."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak_allocated_gb: dict[str, float] = {}
        self.current: str | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.begin(name)
        try:
            yield
            self.current = None
        finally:
            self.end(name, start)

    def begin(self, name: str) -> float:
        """Start `name` (for phases bounded by callbacks rather than a block); returns its start for end()."""
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.current = name
        return time.perf_counter()

    def end(self, name: str, start: float, until: float | None = None) -> None:
        """End `name` now (or at the host time `until`, already synchronised), adding to earlier parts of it."""
        synchronize(self.device)
        stop = until if until is not None else time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + stop - start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 1e9
            self.peak_allocated_gb[name] = max(peak, self.peak_allocated_gb.get(name, 0.0))


class HostSteps:
    """Step boundaries of a loop wanbench does not own (the official and diffusers engines), marked from hooks on
    the host clock after a device synchronisation: the first mark begins the denoise phase, the last ends it."""

    def __init__(self, timer: PhaseTimer, phase: str = "denoise") -> None:
        self.timer, self.phase = timer, phase
        self.marks: list[float] = []
        self._open = False

    @property
    def started(self) -> bool:
        return bool(self.marks)

    def mark(self) -> None:
        if not self.marks:
            self.marks.append(self.timer.begin(self.phase))
            self._open = True
            return
        synchronize(self.timer.device)
        self.marks.append(time.perf_counter())

    def finish(self, until: float | None = None) -> bool:
        """End the phase at the last mark, or at `until` (a synchronised host time) taken as one more; once.
        Returns whether this call ended it."""
        if not self._open:
            return False
        if until is not None:
            self.marks.append(until)
        self.timer.end(self.phase, self.marks[0], until=self.marks[-1])
        self.timer.current = None
        self._open = False
        return True

    def step_seconds(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.marks)]


class StepTimer:
    """Per-step times without a host-device sync inside the loop (CUDA events, read after the loop)."""

    def __init__(self, device: torch.device) -> None:
        self.use_events = device.type == "cuda"
        self._marks: list = []

    def mark(self) -> None:
        if self.use_events:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def step_seconds(self) -> list[float]:
        """Seconds between consecutive marks; call after the device has been synchronised."""
        if self.use_events:
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self._marks, self._marks[1:], strict=False)]
        return [b - a for a, b in zip(self._marks, self._marks[1:], strict=False)]
