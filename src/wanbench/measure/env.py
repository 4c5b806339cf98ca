"""Environment capture: what ran the numbers (hardware, driver, libraries, code revision)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from wanbench.measure.host import total_gb


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_revision() -> dict[str, Any]:
    """Commit and dirty flag of the wanbench source tree (None outside a checkout).

    WANBENCH_GIT_COMMIT wins when set: a copied tree (a device machine) can carry a stale .git, and
    the stamp written beside the copy is the one that names what actually ran.
    """
    if os.environ.get("WANBENCH_GIT_COMMIT"):
        dirty = os.environ.get("WANBENCH_GIT_DIRTY")
        return {"commit": os.environ["WANBENCH_GIT_COMMIT"], "dirty": None if dirty is None else dirty == "1"}
    src = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # no NVML library or no driver: a CPU-only machine
        return None


def gpu_info() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({
            "index": index,
            "name": props.name,
            "capacity_gb": props.total_memory / 1e9,
            "sm_count": props.multi_processor_count,
            "compute_capability": f"{props.major}.{props.minor}",
        })
    return gpus


# Process-wide settings that change a run's speed or memory without showing in its configuration.
TUNING_PREFIXES = ("NCCL_", "TORCH_NCCL_", "TORCH_SYMM_MEM_", "NVSHMEM_", "PYTORCH_CUDA_ALLOC_CONF",
                   "CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_VISIBLE_DEVICES", "TORCHINDUCTOR_")


# Set by the tools themselves in every worker (torchrun, inductor, the container image), not chosen for a run.
NOT_TUNING = {"TORCH_NCCL_ASYNC_ERROR_HANDLING", "TORCHINDUCTOR_CACHE_DIR", "NCCL_VERSION"}


GPU_ONLY = ("NCCL_", "NVSHMEM_", "TORCH_SYMM_MEM_")  # no effect without a GPU (workers get them by default)


def tuning_environment() -> dict[str, str]:
    skip = () if torch.cuda.is_available() else GPU_ONLY
    return {k: v for k, v in sorted(os.environ.items())
            if k.startswith(TUNING_PREFIXES) and k not in NOT_TUNING and not k.startswith(skip)}


def capture_environment() -> dict[str, Any]:
    gpus = gpu_info()
    nccl = None
    if torch.cuda.is_available():
        try:
            nccl = ".".join(str(v) for v in torch.cuda.nccl.version())
        except Exception:
            nccl = None
    return {
        "hostname": socket.gethostname(),
        "host_memory_gb": total_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),  # intra-op threads of this rank (every rank runs alike)
        "gpu_count": len(gpus),
        "gpu_names": sorted({g["name"] for g in gpus}),
        "gpus": gpus,
        "driver": driver_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nccl": nccl,
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "wanbench": _version("wanbench"),
        "git": git_revision(),
        "tuning_env": tuning_environment(),
    }
