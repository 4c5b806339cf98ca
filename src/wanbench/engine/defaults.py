"""What the engine turns on by default on the hardware a run finds: its policy, decided by measurement.

Regional torch.compile is on where it measured faster (benchmarks/RESULTS.md, "Compile, head chunks and the
cost-balanced VAE pipeline"): on CUDA, without offload, FSDP of the experts, ring attention or First Block Cache
(those run eager unless --compile asks); FP8 is compiled too, since its casts fuse only then; CFG parallel runs the
one-GPU forward on each rank. The other engines run as they ship. settings.config_from_settings applies it to
every configuration the CLI or a suite file makes, where the user did not set `compile`.
"""

from __future__ import annotations

import dataclasses

from wanbench.config import RunConfig


def on_cuda(device: str) -> bool:
    """Whether a run asking for `device` ('auto', 'cpu', 'cuda', 'cuda:N') runs on a CUDA GPU."""
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def compile_by_default(config: RunConfig) -> bool:
    p = config.parallel
    return (config.engine == "wanbench" and on_cuda(config.device) and p.offload == "none"
            and "dit" not in p.fsdp and p.ring == 1 and config.cache == "none")


def with_defaults(config: RunConfig, given: frozenset[str] | set[str]) -> RunConfig:
    """`config` with the engine's defaults for the settings not in `given` (the keys the user set)."""
    if "compile" in given:
        return config
    return dataclasses.replace(config, compile=compile_by_default(config))
