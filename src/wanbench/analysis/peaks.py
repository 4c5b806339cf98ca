"""Peak dense bf16 tensor-core rates (TFLOP/s, no sparsity) by GPU name, from vendor datasheets.

A measured peak (`wanbench env --measure-peak`) can replace these: MFU against the datasheet is
what vendors quote; MFU against the measured matmul rate says how close a run is to this machine.
"""

from __future__ import annotations

# Ordered: the first key contained in the device name wins (so "H100 PCIe" before "H100").
DATASHEET_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("B300", 2250.0),
    ("B200", 2250.0),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H20", 148.0),
    ("A100", 312.0),
    ("L40S", 362.05),
    ("RTX 5090", 209.5),
    ("RTX 4090", 165.2),
    ("L4", 121.0),
    ("A10G", 70.0),
)


def peak_tflops(gpu_name: str) -> float | None:
    name = gpu_name.upper()
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key.upper() in name:
            return tflops
    return None


def known_gpus() -> list[str]:
    return [key for key, _ in DATASHEET_BF16_TFLOPS]
