"""Memory and utilisation sampler: a background thread of the runner process (not the worker).

Reads NVML (nvidia-ml-py) used memory and utilisation of each GPU the run uses, and the resident
memory of the worker's whole process tree, every `interval_s`. Being outside the worker, it costs
the worker no Python time; NVML queries are cheap driver calls.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass
class Samples:
    t: list[float] = field(default_factory=list)  # wall clock (time.time())
    gpu_used_gb: dict[int, list[float]] = field(default_factory=dict)
    gpu_util_pct: dict[int, list[float]] = field(default_factory=dict)
    host_rss_gb: list[float] = field(default_factory=list)
    gpu_capacity_gb: dict[int, float] = field(default_factory=dict)


def tree_rss_gb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 1e9


def nvml_ids(cuda_indices: list[int], visible: str | None) -> dict[int, int | str]:
    """CUDA ordinal -> NVML index (int) or UUID prefix (str), through CUDA_VISIBLE_DEVICES.

    NVML numbers every GPU of the host; CUDA numbers only the visible ones, so with
    CUDA_VISIBLE_DEVICES=2,3 the run's cuda:0 is NVML's GPU 2. Assumes CUDA and NVML agree on the
    order of the whole host (true on servers of one GPU model; set CUDA_DEVICE_ORDER=PCI_BUS_ID otherwise).
    """
    if not visible or not visible.strip():
        return {i: i for i in cuda_indices}
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    out: dict[int, int | str] = {}
    for i in cuda_indices:
        if i >= len(entries):
            raise ValueError(f"cuda:{i} is not visible (CUDA_VISIBLE_DEVICES={visible})")
        entry = entries[i]
        out[i] = int(entry) if entry.isdigit() else entry
    return out


def _handle(pynvml: Any, device_id: int | str) -> Any:
    if isinstance(device_id, int):
        return pynvml.nvmlDeviceGetHandleByIndex(device_id)
    for n in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(n)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        if (uuid.decode() if isinstance(uuid, bytes) else uuid).startswith(device_id):
            return handle
    raise ValueError(f"no GPU with UUID {device_id}")


class _Nvml:
    def __init__(self, indices: list[int]) -> None:
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        ids = nvml_ids(indices, os.environ.get("CUDA_VISIBLE_DEVICES"))
        self.handles = {i: _handle(pynvml, device_id) for i, device_id in ids.items()}

    def capacity_gb(self) -> dict[int, float]:
        return {i: self.nvml.nvmlDeviceGetMemoryInfo(h).total / 1e9 for i, h in self.handles.items()}

    def read(self) -> dict[int, tuple[float, float]]:
        out = {}
        for i, h in self.handles.items():
            used = self.nvml.nvmlDeviceGetMemoryInfo(h).used / 1e9
            util = float(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            out[i] = (used, util)
        return out

    def close(self) -> None:
        self.nvml.nvmlShutdown()


def open_nvml(indices: list[int]) -> _Nvml | None:
    if not indices:
        return None
    try:
        return _Nvml(indices)
    except Exception:  # no driver / library: a CPU-only machine
        return None


def gpu_used_gb(indices: list[int]) -> dict[int, float]:
    """One reading of used memory per GPU (empty without NVML)."""
    nvml = open_nvml(indices)
    if nvml is None:
        return {}
    try:
        return {i: used for i, (used, _) in nvml.read().items()}
    finally:
        nvml.close()


class MemorySampler:
    """start(pid) ... stop() -> Samples; one sample immediately, then every interval_s."""

    def __init__(self, gpu_indices: list[int], interval_s: float = 0.5) -> None:
        self.gpu_indices = gpu_indices
        self.interval_s = interval_s
        self.samples = Samples()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None

    def start(self, pid: int) -> None:
        self._nvml = open_nvml(self.gpu_indices)
        if self._nvml is not None:
            self.samples.gpu_capacity_gb = self._nvml.capacity_gb()
        self._thread = threading.Thread(target=self._loop, args=(pid,), daemon=True)
        self._thread.start()

    def _loop(self, pid: int) -> None:
        while True:
            self._sample(pid)
            if self._stop.wait(self.interval_s):
                return

    def _sample(self, pid: int) -> None:
        s = self.samples
        s.t.append(time.time())
        s.host_rss_gb.append(tree_rss_gb(pid))
        if self._nvml is not None:
            for i, (used, util) in self._nvml.read().items():
                s.gpu_used_gb.setdefault(i, []).append(used)
                s.gpu_util_pct.setdefault(i, []).append(util)

    def stop(self) -> Samples:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._nvml is not None:
            self._nvml.close()
        return self.samples


def reduce_window(samples: Samples, start: float, end: float) -> dict[str, Any]:
    """Peak / average / percent of capacity per GPU and for host RSS, over samples in [start, end]."""
    idx = [i for i, t in enumerate(samples.t) if start <= t <= end]
    if not idx and samples.t:
        # A run shorter than one interval: take the nearest sample.
        idx = [min(range(len(samples.t)), key=lambda i: abs(samples.t[i] - (start + end) / 2))]
    out: dict[str, Any] = {"gpus": [], "sample_count": len(idx)}
    for gpu, used in samples.gpu_used_gb.items():
        values = [used[i] for i in idx]
        util = [samples.gpu_util_pct[gpu][i] for i in idx]
        cap = samples.gpu_capacity_gb.get(gpu)
        peak = max(values) if values else None
        out["gpus"].append({
            "index": gpu, "peak_gb": peak, "avg_gb": sum(values) / len(values) if values else None,
            "capacity_gb": cap, "peak_pct": 100 * peak / cap if cap and peak is not None else None,
            "avg_util_pct": sum(util) / len(util) if util else None,
            "samples": {"t": [samples.t[i] - start for i in idx], "used_gb": values, "util_pct": util},
        })
    host = [samples.host_rss_gb[i] for i in idx]
    out["host_rss"] = {
        "peak_gb": max(host) if host else None, "avg_gb": sum(host) / len(host) if host else None,
        "samples": {"t": [samples.t[i] - start for i in idx], "rss_gb": host},
    }
    return out
