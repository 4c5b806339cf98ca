"""Casting that matches what diffusers' from_pretrained(torch_dtype=...) produces."""

from __future__ import annotations

import torch


def torch_dtype(name: str) -> torch.dtype:
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def cast_keeping_fp32_modules(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast parameters to dtype except those diffusers keeps in fp32 (`_keep_in_fp32_modules`).

    diffusers matches a kept module by an exact dotted-name component; buffers keep their dtype.
    """
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        target = torch.float32 if keep.intersection(name.split(".")) else dtype
        if param.dtype != target:
            param.data = param.data.to(target)
    return model
