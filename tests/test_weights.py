"""Checkpoint loading in both layouts, and the clear failures for bad checkpoints."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers

from checkpoints import (
    official_t5_state,
    official_transformer_state,
    official_vae_state,
    write_diffusers_folder,
    write_official_folder,
)
from wanbench.errors import UserError
from wanbench.models import build_components
from wanbench.models.official import convert_t5_state_dict
from wanbench.presets import get_preset

TINY = get_preset("tiny")
CPU = torch.device("cpu")


def load(path):
    return build_components(TINY, str(path), CPU, torch.float32, torch.float32, 12.0)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_official_inverse_round_trips_through_the_converters(tiny_components):
    c = tiny_components
    state = c.transformer.state_dict()
    back = convert_wan_transformer_to_diffusers(official_transformer_state(state))
    assert back.keys() == state.keys()
    vae_state = c.vae.state_dict()
    assert convert_wan_vae_to_diffusers(official_vae_state(vae_state)).keys() == vae_state.keys()
    t5_state = c.text_encoder.state_dict()
    assert convert_t5_state_dict(official_t5_state(t5_state)).keys() == t5_state.keys()


@pytest.mark.parametrize("layout", ["diffusers", "official"])
def test_checkpoint_layouts_load_the_same_weights(tiny_components, tmp_path, layout):
    writer = write_diffusers_folder if layout == "diffusers" else write_official_folder
    loaded = load(writer(tiny_components, tmp_path / layout))
    assert loaded.weights.startswith(layout)
    for ours, theirs in [(loaded.transformer, tiny_components.transformer),
                         (loaded.transformer_2, tiny_components.transformer_2),
                         (loaded.text_encoder, tiny_components.text_encoder), (loaded.vae, tiny_components.vae)]:
        assert_same_weights(ours, theirs)
    ids = loaded.tokenizer(["a cat"]).input_ids
    assert ids == tiny_components.tokenizer(["a cat"]).input_ids


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory, tiny_components):
    return write_official_folder(tiny_components, tmp_path_factory.mktemp("ckpt") / "official")


def copy_of(folder, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_missing_shard_is_a_clear_error(official_folder, tmp_path):
    path = copy_of(official_folder, tmp_path)
    (path / "low_noise_model" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(UserError, match=r"missing checkpoint file .*00002-of-00002"):
        load(path)


def test_truncated_safetensors_is_a_clear_error(official_folder, tmp_path):
    path = copy_of(official_folder, tmp_path)
    shard = path / "high_noise_model" / "diffusion_pytorch_model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(UserError, match=r"corrupt or truncated .*download that file again"):
        load(path)


def test_garbage_safetensors_is_a_clear_error(official_folder, tmp_path):
    path = copy_of(official_folder, tmp_path)
    (path / "high_noise_model" / "diffusion_pytorch_model-00001-of-00002.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match=r"corrupt or truncated"):
        load(path)


class Evil:
    def __reduce__(self):
        return (print, ("pickle executed",))


def test_pth_with_arbitrary_objects_is_refused(official_folder, tmp_path, capsys):
    path = copy_of(official_folder, tmp_path)
    with open(path / "Wan2.1_VAE.pth", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(UserError, match=r"tensor-only .pth"):
        load(path)
    assert "pickle executed" not in capsys.readouterr().out


def test_missing_t5_file_and_unknown_folder(official_folder, tmp_path):
    path = copy_of(official_folder, tmp_path)
    (path / "models_t5_umt5-xxl-enc-bf16.pth").unlink()
    with pytest.raises(UserError, match=r"missing checkpoint file .*models_t5"):
        load(path)
    with pytest.raises(UserError, match=r"neither a diffusers folder"):
        load(tmp_path)
    with pytest.raises(UserError, match=r"no such folder"):
        load(tmp_path / "nope")


def test_seeded_random_weights_depend_on_seed_and_name_only():
    from wanbench.models.seeded_init import seeded_values

    cpu = torch.device("cpu")
    a = seeded_values("transformer.blocks.0.ffn.net.0.proj.weight", (64, 32), torch.float32, cpu, seed=7)
    assert torch.equal(a, seeded_values("transformer.blocks.0.ffn.net.0.proj.weight", (64, 32), torch.float32,
                                        cpu, seed=7))
    assert not torch.equal(a, seeded_values("transformer.blocks.1.ffn.net.0.proj.weight", (64, 32), torch.float32,
                                            cpu, seed=7))
    assert not torch.equal(a, seeded_values("transformer.blocks.0.ffn.net.0.proj.weight", (64, 32), torch.float32,
                                            cpu, seed=8))
    # PyTorch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in 32 -> bound 0.1768
    assert a.abs().max() <= 32 ** -0.5 and a.abs().max() > 0.9 * 32 ** -0.5
    # diffusers fuses q, k, v by concatenation: the fused weight is made of the parts' values
    q, k, v = (seeded_values(f"t.blocks.0.attn1.{n}.weight", (8, 8), torch.float32, cpu, 1) for n in ("to_q", "to_k",
                                                                                                       "to_v"))
    fused = seeded_values("t.blocks.0.attn1.to_qkv.weight", (24, 8), torch.float32, cpu, 1)
    assert torch.equal(fused, torch.cat([q, k, v]))


def test_deferred_modules_stay_on_meta_until_filled_and_then_match():
    from wanbench.models.random_init import build_random
    from wanbench.models.seeded_init import fill_sharded_

    preset, cpu = get_preset("tiny"), torch.device("cpu")
    whole = build_random(preset, cpu, torch.bfloat16, torch.float32, 12.0, seed=3)
    deferred = build_random(preset, cpu, torch.bfloat16, torch.float32, 12.0, seed=3,
                            defer=frozenset({"transformer"}))
    assert deferred.unfilled == ("transformer",)
    assert all(p.is_meta for p in deferred.transformer.parameters())
    assert not any(p.is_meta for p in deferred.transformer_2.parameters())
    assert_same_weights(whole.transformer_2, deferred.transformer_2)
    for name in deferred.unfilled:  # without FSDP the "shard" is the whole tensor
        fill_sharded_(getattr(deferred, name), cpu, 3, name)
    assert_same_weights(whole.transformer, deferred.transformer)
    assert_same_weights(whole.text_encoder, deferred.text_encoder)
    assert deferred.text_encoder.shared.weight is deferred.text_encoder.encoder.embed_tokens.weight
    rope = dict(whole.transformer.named_buffers())
    assert all(torch.equal(rope[n], b) for n, b in deferred.transformer.named_buffers())


def test_offloaded_builds_stay_in_host_memory(official_folder):
    """Under --offload nothing is loaded onto the GPU first (a card smaller than the model could not hold it):
    checkpoints load into host memory whatever the device, and random values drawn on the device are kept in
    host memory (here "meta" stands for a device that cannot hold the model, and for a home that is not it)."""
    from wanbench.models.random_init import build_random

    meta = torch.device("meta")
    loaded = build_components(TINY, str(official_folder), meta, torch.float32, torch.float32, 12.0, offloaded=True)
    resident = load(official_folder)
    for name in ("transformer", "transformer_2", "text_encoder", "vae"):
        assert all(p.device == CPU for p in getattr(loaded, name).parameters()), name
        assert_same_weights(getattr(loaded, name), getattr(resident, name))
    kept = build_random(TINY, CPU, torch.float32, torch.float32, 12.0, seed=3, home=meta)
    for name in ("transformer", "transformer_2", "text_encoder", "vae"):
        assert all(p.is_meta for p in getattr(kept, name).parameters()), name
