"""Energy of a generation from NVML's total-energy counter of the GPU a rank runs on.

The counter (nvmlDeviceGetTotalEnergyConsumption, Volta and newer) counts millijoules since the driver loaded;
the difference of two readings is the energy of what ran between them, the GPU's whole board, idle power
included. Read by each rank for its own GPU around the generation only (loading and compiling left out).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from wanbench.measure.sampler import _handle, nvml_ids

SOURCE = "NVML total energy counter"


class EnergyCounter:
    """One GPU's energy counter; `read_mj()` is None where there is no GPU, no NVML or no counter."""

    def __init__(self, device: torch.device) -> None:
        self.nvml: Any = None
        self.handle: Any = None
        if device.type != "cuda":
            return
        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = _handle(pynvml, nvml_ids([index], os.environ.get("CUDA_VISIBLE_DEVICES"))[index])
            self.nvml = pynvml
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except Exception:  # no driver, library or counter (pre-Volta): energy is then not measured
            self.nvml = self.handle = None

    def read_mj(self) -> int | None:
        if self.nvml is None:
            return None
        try:
            return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:
            return None


def window(start_mj: int | None, end_mj: int | None, seconds: float) -> dict[str, Any]:
    """This rank's energy block: joules and average watts between two readings, or why there are none."""
    if start_mj is None or end_mj is None:
        return {"measured": False, "reason": "no GPU energy counter (CPU run, or NVML missing)"}
    joules = (end_mj - start_mj) / 1000.0
    return {"measured": True, "source": SOURCE, "joules": joules, "seconds": seconds,
            "avg_watts": joules / seconds if seconds > 0 else None}


def combine(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's energy from each rank's block (one GPU per rank): the sum, and the average power per GPU."""
    if not ranks or not all(r.get("measured") for r in ranks):
        missing = next((r for r in ranks if not r.get("measured")), {})
        return {"measured": False, "reason": missing.get("reason", "no rank measured energy")}
    joules = sum(r["joules"] for r in ranks)
    seconds = max(r["seconds"] for r in ranks)
    return {"measured": True, "source": SOURCE, "joules": joules, "seconds": seconds, "gpus": len(ranks),
            "per_gpu_joules": [r["joules"] for r in ranks],
            "avg_watts_per_gpu": joules / (seconds * len(ranks)) if seconds > 0 else None}
