from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# as the CLI does before any library loads: a test that imports one first must not see its chatter on stderr
from wanbench.launch.process import quiet_libraries  # noqa: E402

quiet_libraries()


@pytest.fixture(scope="session")
def tiny_components():
    from wanbench.models import build_components
    from wanbench.presets import get_preset

    return build_components(
        get_preset("tiny"), "random", torch.device("cpu"), torch.float32, torch.float32, shift=12.0, seed=0
    )


@pytest.fixture(scope="session")
def expert_forward(tiny_components):
    """Runs a tiny expert (or a changed copy of one) on fixed seeded latents and text, without gradients."""
    config = tiny_components.transformer.config
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, config.in_channels, 3, 8, 12, generator=gen)  # 3 x 4 x 6 tokens of 2x2 patches
    text = torch.randn(1, 16, config.text_dim, generator=gen)

    def run(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return model(hidden_states=latents, timestep=torch.tensor([900]), encoder_hidden_states=text,
                         return_dict=False)[0]

    return run


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    """The smoke suite run once through the CLI: (results folder, completed process)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("smoke")
    proc = subprocess.run([sys.executable, "-m", "wanbench.cli", "bench", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc
