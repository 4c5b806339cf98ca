"""Wan self-attention processors that change how attention is computed, never what.

diffusers' WanAttnProcessor projects q/k/v, applies the q/k RMS norms and RoPE, attends through the
dispatcher and projects out. `SelfAttentionProcessor` keeps that body (mirroring diffusers 0.42 for
text-to-video self-attention; the pin `diffusers<0.43` keeps them in step, tests compare the results)
and hands the attention itself to `attend`; cross-attention and image-to-video layers keep the stock
path. Subclasses: KernelAttentionProcessor (below: self-attention through a kernel outside diffusers'
dispatcher, e.g. FlashAttention 4, where no context parallelism is active) and HeadBlockUlyssesProcessor
(engine/ulysses_heads.py, which lays q/k/v out heads-first).
`install` puts one on every block's self-attention, keeping the backend, the kernel and the parallel config.
HeadBlockUlyssesProcessor attends through `attention`, so a kernel chosen by --attention applies there too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_qkv_projections

from wanbench.engine.attention import attend


def _rotate(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """diffusers' Wan RoPE, written into `out` (any strides, x's shape and dtype) when given."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    out = torch.empty_like(x) if out is None else out
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def heads_first(x: torch.Tensor, rotary_emb) -> torch.Tensor:
    """[B, S, H, D] -> [B, H, S, D] contiguous, RoPE applied on the way when given (one pass, no extra copy)."""
    b, s, h, d = x.shape
    out = torch.empty(b, h, s, d, dtype=x.dtype, device=x.device)
    write_rotated(x, rotary_emb, out.transpose(1, 2))
    return out


def write_rotated(x: torch.Tensor, rotary_emb, out: torch.Tensor) -> None:
    """x with RoPE applied (when given) written into `out`, a [B, S, H, D] view of any strides."""
    if rotary_emb is None:
        out.copy_(x)
    else:
        _rotate(x, *rotary_emb, out=out)


def project_qkv(attn, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Self-attention q, k, v as [B, S, H, D], normed as WanAttnProcessor does (RoPE not yet applied)."""
    query, key, value = _get_qkv_projections(attn, hidden_states, None)
    query, key = attn.norm_q(query), attn.norm_k(key)
    return tuple(x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))


class SelfAttentionProcessor(WanAttnProcessor):
    """WanAttnProcessor whose text-to-video self-attention is computed by `attend` ([B, S, H, D] out) on what
    `place_qkv` made of the projections ([B, S, H, D] rotated tensors unless a subclass lays them out itself)."""

    kernel: str | None = None  # engine/attention.py KERNELS; None: diffusers' dispatcher with _attention_backend

    def handles(self) -> bool:
        return True

    def context_parallel(self):
        """diffusers' ContextParallelConfig of this layer, or None outside context parallelism."""
        return self._parallel_config.context_parallel_config if self._parallel_config is not None else None

    def ulysses_group(self):
        """(process group, degree) of this layer's Ulysses ranks."""
        cp = self.context_parallel()
        return cp._ulysses_mesh.get_group(), cp.ulysses_degree

    def attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Local attention of [B, S, H, D] tensors (strided views allowed) with this run's kernel or backend."""
        return attend(query, key, value, self._attention_backend, self.kernel)

    def place_qkv(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rotary_emb):
        """[B, S, H, D] projections -> what `attend` takes; RoPE is applied to q and k on the way."""
        if rotary_emb is not None:
            query, key = _rotate(query, *rotary_emb), _rotate(key, *rotary_emb)
        return query, key, value

    def attend(self, query, key, value) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None or attn.add_k_proj is not None or attention_mask is not None or (
                not self.handles()):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        projections = project_qkv(attn, hidden_states)
        out = self.attend(*self.place_qkv(*projections, rotary_emb)).flatten(2, 3).type_as(projections[0])
        return attn.to_out[1](attn.to_out[0](out))


class UlyssesExchangeProcessor(SelfAttentionProcessor):
    """Base of the processors that make Ulysses' exchange their own way (Ulysses without ring)."""

    def handles(self) -> bool:
        cp = self.context_parallel()
        return cp is not None and cp.ring_degree == 1 and cp.ulysses_degree > 1


class KernelAttentionProcessor(SelfAttentionProcessor):
    """Self-attention through `kernel` on one rank's whole sequence (no context parallelism)."""

    def __init__(self, kernel: str) -> None:
        super().__init__()
        self.kernel = kernel

    def handles(self) -> bool:
        return self.context_parallel() is None

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return self.attention(query, key, value)


def install(expert: torch.nn.Module, make: Callable[[], SelfAttentionProcessor]) -> int:
    """Give every block's self-attention a processor from `make`; returns how many will use it (the others
    keep the stock path, e.g. an attention backend the processor has no kernel for)."""
    for block in expert.blocks:
        old, new = block.attn1.processor, make()
        new._attention_backend, new._parallel_config = old._attention_backend, old._parallel_config
        new.kernel = new.kernel or getattr(old, "kernel", None)
        block.attn1.processor = new
    return sum(block.attn1.processor.handles() for block in expert.blocks)
