"""Safe, checked reading of checkpoint files: safetensors, or .pth through weights_only=True only."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from wanbench.errors import UserError


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"missing checkpoint file {path} ({what}): copy the complete checkpoint folder")
    return path


def load_safetensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    require_file(path, "safetensors weights")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"corrupt or truncated checkpoint file {path} ({exc}): download that file again"
        ) from None


def load_pth(path: Path) -> dict[str, torch.Tensor]:
    """A .pth state dict, never unpickling arbitrary objects."""
    require_file(path, "torch weights")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for bad zip/pickle content
        raise UserError(
            f"cannot read {path} as a tensor-only .pth file ({type(exc).__name__}): download that file again"
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path} holds no state dict of tensors: download that file again")
    return data


def check_safetensors(path: Path) -> list[str]:
    """Header and size check of one file without reading its tensors; returns the tensor names."""
    require_file(path, "safetensors weights")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"corrupt or truncated checkpoint file {path} ({exc}): download that file again"
        ) from None


def shard_files(folder: Path) -> list[Path]:
    """The shards of a folder, all present and readable, checked against its index file if any."""
    index_files = sorted(folder.glob("*.safetensors.index.json"))
    if not index_files:
        shards = sorted(folder.glob("*.safetensors"))
        if not shards:
            raise UserError(f"no .safetensors weights in {folder}: copy the complete checkpoint folder")
        for shard in shards:
            check_safetensors(shard)
        return shards
    try:
        weight_map = json.loads(index_files[0].read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise UserError(f"corrupt index file {index_files[0]} ({exc}): download it again") from None
    shards = sorted({folder / name for name in weight_map.values()})
    found: set[str] = set()
    for shard in shards:
        found.update(check_safetensors(shard))
    missing = set(weight_map) - found
    if missing:
        raise UserError(
            f"{folder}: {len(missing)} tensors named in the index are missing from the shards "
            f"(e.g. {sorted(missing)[0]}): download the checkpoint again"
        )
    return shards


def load_sharded_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """All shards of a folder, checked against its index file when there is one."""
    state: dict[str, torch.Tensor] = {}
    for shard in shard_files(folder):
        state.update(load_safetensors(shard))
    return state
