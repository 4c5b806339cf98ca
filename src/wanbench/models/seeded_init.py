"""Random weights as a function of (seed, parameter name): the same values whoever builds them.

`--weights random` fills every parameter from its own generator, seeded by the run seed and the
parameter's dotted name. A module built whole on one device and one built on the meta device and filled
shard by shard after FSDP2 therefore hold the same weights, so strategies stay comparable and no rank
ever has to hold a whole expert. Distributions follow PyTorch's defaults: weights U(+-1/sqrt(fan_in)),
embeddings N(0, 1), norm scales 1, biases 0, Wan's modulation tables N(0, 1)/sqrt(dim). Values are drawn
in fp32 and cast, as from_pretrained casts fp32 checkpoints.
"""

from __future__ import annotations

import hashlib
import math

import torch

# diffusers' fuse_projections concatenates these along dim 0; the fused weight is built from its parts
# so that fusing before or after filling gives the same function.
FUSED_PARTS = {
    "to_qkv": ("to_q", "to_k", "to_v"),
    "to_kv": ("to_k", "to_v"),
    "to_added_kv": ("add_k_proj", "add_v_proj"),
}
EMBEDDING_NAMES = ("shared", "embed_tokens", "relative_attention_bias")


def _generator(seed: int, name: str, device: torch.device) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return generator


def seeded_values(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                  seed: int) -> torch.Tensor:
    """The values of parameter `name` (dotted, from the model's root) for this seed."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] in FUSED_PARTS:
        pieces = FUSED_PARTS[parts[-2]]
        piece_shape = (shape[0] // len(pieces), *shape[1:])
        return torch.cat([seeded_values(".".join([*parts[:-2], piece, parts[-1]]), piece_shape, dtype, device, seed)
                          for piece in pieces])
    leaf = parts[-1]
    if leaf == "bias":
        return torch.zeros(shape, dtype=dtype, device=device)
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype, device=device)
    generator = _generator(seed, name, device)
    if "scale_shift_table" in leaf:
        values = torch.randn(shape, generator=generator, device=device) / math.sqrt(shape[-1])
    elif any(part in EMBEDDING_NAMES for part in parts):
        values = torch.randn(shape, generator=generator, device=device)
    else:
        bound = 1.0 / math.sqrt(math.prod(shape[1:]))
        values = torch.rand(shape, generator=generator, device=device).mul_(2 * bound).sub_(bound)
    return values.to(dtype)


def fill_(module: torch.nn.Module, device: torch.device, seed: int, prefix: str,
          draw_device: torch.device | None = None) -> torch.nn.Module:
    """Give every meta parameter of `module` its seeded values on `device` (buffers move along).

    Values are drawn on `draw_device` (default `device`), one parameter at a time, and moved to `device`: a
    module kept in host memory for offloading holds the values a GPU-resident build draws.
    Tied parameters (T5's shared embedding) stay tied: one new tensor per original parameter.
    """
    filled: dict[int, torch.nn.Parameter] = {}
    for name, param in list(module.named_parameters(remove_duplicate=False)):
        owner_name, _, leaf = name.rpartition(".")
        if id(param) not in filled:
            values = seeded_values(f"{prefix}.{name}", tuple(param.shape), param.dtype, draw_device or device,
                                   seed).to(device)
            filled[id(param)] = torch.nn.Parameter(values, requires_grad=False)
        module.get_submodule(owner_name)._parameters[leaf] = filled[id(param)]
    return module.to(device)


def fill_sharded_(module: torch.nn.Module, device: torch.device, seed: int, prefix: str) -> None:
    """Materialise a meta module after FSDP2 sharded it: each rank allocates and fills only its shards.

    A parameter's full values exist on the device one parameter at a time, never a whole module.
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    buffers = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
    module.to_empty(device=device)
    for name, saved in buffers.items():  # to_empty leaves buffers (e.g. RoPE tables) uninitialised
        module.get_buffer(name).copy_(saved)
    with torch.no_grad():
        for name, param in module.named_parameters():
            full = seeded_values(f"{prefix}.{name}", tuple(param.shape), param.dtype, device, seed)
            if isinstance(param, DTensor):  # each rank keeps its own shard of the same full values
                param.copy_(distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None))
            else:
                param.copy_(full)
            del full  # before the next parameter's values are drawn: one full parameter at a time
