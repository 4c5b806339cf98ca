"""The official engine: the Wan team's WanT2V, built and called as their generate.py does, timed from outside.

Loading is `WanT2V(...)` with the run's options (offload_model, t5_cpu, convert_model_dtype, init_on_cpu,
dit_fsdp, t5_fsdp, use_sp); generation is its own `generate()`, unmodified. Phases are taken by wrapping its
objects: the text encoder's calls, `_prepare_model_for_timestep` (once at the start of every step, expert
swaps included), a forward hook on each expert, and the VAE's `decode`. Where the official constructors cannot
build what the run asks for (random weights; the tiny preset's dimensions; a VAE on a machine without CUDA),
`official_builders` stands the official modules' own constructors in for the checkpoint loaders.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wanbench.config import RunConfig
from wanbench.errors import UserError
from wanbench.launch.distributed import DistContext
from wanbench.measure.timers import HostSteps, PhaseTimer, synchronize
from wanbench.models.dtypes import torch_dtype

CPU = torch.device("cpu")


@dataclass
class OfficialPipeline:
    """A constructed WanT2V and what it needs kept alive (the tokenizer folder of a random-weight build)."""

    t2v: Any
    workdir: tempfile.TemporaryDirectory | None = None
    notes: list[str] = field(default_factory=list)


def official_config(config: RunConfig, wan_configs: dict) -> Any:
    """The official t2v-A14B config; for another preset (tiny) its dimensions and dtype in place of A14B's."""
    cfg = copy.deepcopy(wan_configs["t2v-A14B"])
    cfg.boundary = config.boundary if config.boundary is not None else 0.0
    if config.model == "a14b":
        return cfg
    spec, text = config.preset.transformer, config.preset.text_encoder
    dtype = torch_dtype(config.dtype)
    cfg.update(dim=spec.dim, ffn_dim=spec.ffn_dim, freq_dim=spec.freq_dim, num_heads=spec.num_attention_heads,
               num_layers=spec.num_layers, text_len=text.text_len, param_dtype=dtype, t5_dtype=dtype)
    return cfg


def load(config: RunConfig, ctx: DistContext, dims: Any, notes: list[str]) -> OfficialPipeline:
    from wanbench.engines.official_import import bridge_attention, import_official, official_version

    if ctx.device.type == "cpu" and config.dtype != "float32":
        raise UserError("the official code keeps its time embedding in float32 through CUDA autocast, which a CPU "
                        "run lacks: use --dtype float32 on a CPU")
    # Every torch.load in the official code reads tensors only, whatever the torch version's default.
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    text2video = import_official(config.official_code)
    from wan.configs import WAN_CONFIGS

    notes.append(f"engine: official ({official_version(config.official_code)})")
    note = bridge_attention(torch_dtype(config.dtype))
    if note:
        notes.append(note)
    cfg = official_config(config, WAN_CONFIGS)
    pipeline = OfficialPipeline(t2v=None)
    if config.weights == "random":
        pipeline.workdir = tempfile.TemporaryDirectory(prefix="wanbench-official-")
        checkpoint_dir = Path(pipeline.workdir.name)
        from wanbench.models.tokenizer import byte_tokenizer

        byte_tokenizer().save_pretrained(str(checkpoint_dir / cfg.t5_tokenizer))
        notes.append("random weights: built by the official modules' own constructors and initialisation, experts "
                     "in float32 as from_pretrained returns the published checkpoint (--convert-model-dtype casts "
                     "them to the run's dtype); timings are those of trained weights")
    else:
        from wanbench.models.components import detect_layout

        checkpoint_dir = Path(config.weights).expanduser()
        if detect_layout(checkpoint_dir) != "official":
            raise UserError(f"--engine official reads official Wan2.2 folders (high_noise_model/, low_noise_model/, "
                            f"{cfg.t5_checkpoint}); {config.weights} is a diffusers folder: use --engine wanbench "
                            "or diffusers for it")
    if 1.0 in (config.guidance_high, config.guidance_low):
        notes.append("official engine: the official code runs the unconditional branch at every step, also at a "
                     "guidance scale of 1, where wanbench and diffusers skip it")
    p = config.parallel
    kwargs: dict[str, Any] = dict(
        config=cfg, checkpoint_dir=str(checkpoint_dir), device_id=ctx.local_rank if ctx.device.type == "cuda" else 0,
        rank=ctx.rank, t5_fsdp=dims.fsdp_t5, dit_fsdp=dims.fsdp_dit, use_sp=dims.ulysses > 1, t5_cpu=p.t5_cpu,
        init_on_cpu=config.init_on_cpu, convert_model_dtype=config.convert_model_dtype,
    )
    if "lightning" in inspect.signature(text2video.WanT2V.__init__).parameters:
        # wan22 2.2.11 on the package index adds `lightning=True` to WanT2V: it skips the unconditional branch
        # and reads its experts from a fixed folder. False is the published code's behaviour.
        kwargs["lightning"] = False
        notes.append("official engine: this wan22 package adds WanT2V(lightning=True), which skips classifier-free "
                     "guidance; wanbench passes lightning=False, the Wan team's published behaviour")
    with official_builders(text2video, config, ctx.device), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as generate.py, which ignores every warning
        pipeline.t2v = text2video.WanT2V(**kwargs)
    if ctx.device.type == "cpu":
        pipeline.t2v.device = ctx.device  # WanT2V names cuda:N; on a CPU run every tensor it makes stays here
    return pipeline


@contextlib.contextmanager
def official_builders(text2video: Any, config: RunConfig, device: torch.device) -> Iterator[None]:
    """Stand the official constructors in for WanT2V's loaders where they cannot build this run's modules."""
    import wan.modules.t5 as t5
    import wan.modules.vae2_1 as vae2_1

    random, official_dims = config.weights == "random", config.model == "a14b"
    build_device = device if device.type == "cuda" else torch.device("cpu")  # draw random values on the GPU: fast
    swaps: dict[str, Any] = {}
    if random or not official_dims:
        swaps["T5EncoderModel"] = _preset_t5(t5, config, build_device, load_file=not random)
    if random or not official_dims or device.type == "cpu":
        swaps["Wan2_1_VAE"] = _preset_vae(vae2_1, config, device, load_file=not random)
    if random or not official_dims:
        swaps["WanModel"] = _preset_experts(text2video.WanModel, config, build_device, load_file=not random)
        torch.manual_seed(config.seed)
    saved = {name: getattr(text2video, name) for name in swaps}
    for name, value in swaps.items():
        setattr(text2video, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(text2video, name, value)


def _preset_t5(t5: Any, config: RunConfig, build_device: torch.device, load_file: bool) -> type:
    spec = config.preset.text_encoder

    class PresetT5EncoderModel(t5.T5EncoderModel):
        """The official T5EncoderModel (its tokenizer and __call__) around an official T5Encoder of the preset's
        dimensions: the official class builds only UMT5-XXL and always reads a file."""

        def __init__(self, text_len: int, dtype: torch.dtype = torch.bfloat16,
                     device: torch.device = CPU, checkpoint_path: str | None = None,
                     tokenizer_path: str | None = None, shard_fn: Callable | None = None) -> None:
            self.text_len, self.dtype, self.device = text_len, dtype, device
            self.checkpoint_path, self.tokenizer_path = checkpoint_path, tokenizer_path
            model = t5._t5(
                "umt5-xxl", encoder_only=True, dtype=dtype, device=build_device, vocab_size=spec.vocab_size,
                dim=spec.d_model, dim_attn=spec.num_heads * spec.d_kv, dim_ffn=spec.d_ff, num_heads=spec.num_heads,
                encoder_layers=spec.num_layers, decoder_layers=spec.num_layers,
                num_buckets=spec.relative_attention_num_buckets, shared_pos=False, dropout=0.1,
            ).eval().requires_grad_(False)
            if load_file:
                _require(checkpoint_path)
                model.load_state_dict(torch.load(checkpoint_path, map_location="cpu", weights_only=True))
            self.model = shard_fn(model, sync_module_states=False) if shard_fn is not None else model.to(device)
            self.tokenizer = t5.HuggingfaceTokenizer(name=tokenizer_path, seq_len=text_len, clean="whitespace")

    return PresetT5EncoderModel


def _preset_vae(vae2_1: Any, config: RunConfig, device: torch.device, load_file: bool) -> type:
    spec = config.preset.vae

    def build(pretrained_path: str | None = None, z_dim: int | None = None, **_: Any) -> torch.nn.Module:
        model = vae2_1.WanVAE_(dim=spec.base_dim, z_dim=z_dim, dim_mult=list(spec.dim_mult),
                               num_res_blocks=spec.num_res_blocks, attn_scales=[],
                               temperal_downsample=list(spec.temperal_downsample), dropout=0.0)
        if load_file:
            _require(pretrained_path)
            model.load_state_dict(torch.load(pretrained_path, map_location="cpu", weights_only=True))
        return model

    class PresetWan2_1_VAE(vae2_1.Wan2_1_VAE):
        """The official Wan2_1_VAE (its latent statistics, encode and decode) around an official WanVAE_ of the
        preset's dimensions, on the run's device."""

        def __init__(self, z_dim: int = 16, vae_pth: str | None = None, dtype: torch.dtype = torch.float,
                     device: Any = "cuda") -> None:
            original = vae2_1._video_vae
            vae2_1._video_vae = build
            try:
                device = torch.device(device)
                super().__init__(z_dim=z_dim, vae_pth=vae_pth, dtype=dtype, device=device if device.type == "cuda"
                                 and torch.cuda.is_available() else torch.device("cpu"))
            finally:
                vae2_1._video_vae = original

    return PresetWan2_1_VAE


def _preset_experts(wan_model: type, config: RunConfig, build_device: torch.device, load_file: bool) -> type:
    spec, text_len = config.preset.transformer, config.preset.text_encoder.text_len

    class PresetWanModel:
        """Stands in for WanModel.from_pretrained: the official WanModel of the preset's dimensions (its config
        cannot set text_dim), with its own initialisation or the folder's shards, in float32 and host memory
        as from_pretrained returns the published checkpoint."""

        @staticmethod
        def from_pretrained(checkpoint_dir: str, subfolder: str | None = None, **_: Any) -> torch.nn.Module:
            with torch.device(build_device):
                model = wan_model(
                    model_type="t2v", patch_size=spec.patch_size, text_len=text_len, in_dim=spec.in_channels,
                    dim=spec.dim, ffn_dim=spec.ffn_dim, freq_dim=spec.freq_dim, text_dim=spec.text_dim,
                    out_dim=spec.out_channels, num_heads=spec.num_attention_heads, num_layers=spec.num_layers,
                    window_size=(-1, -1), qk_norm=True, cross_attn_norm=spec.cross_attn_norm, eps=spec.eps,
                )
            model = model.to("cpu")
            if load_file:
                from wanbench.models.checkpoint_files import load_sharded_safetensors

                model.load_state_dict(load_sharded_safetensors(Path(checkpoint_dir) / (subfolder or "")))
            return model

    return PresetWanModel


def _require(path: str | None) -> None:
    if not path or not Path(path).is_file():
        raise UserError(f"the official checkpoint lacks {path}: point --weights at a complete Wan2.2 folder")


def run_phases(config: RunConfig, session: Any, timer: PhaseTimer, generation: Any, progress: bool,
               on_step: Callable[[int], None] | None) -> None:
    """One official `generate()` with its phases timed from outside (see the module docstring)."""
    from wanbench.engine.generate import require_finite
    from wanbench.engine.output import save_frames

    t2v, ctx, result = session.components.t2v, session.ctx, generation.result
    clock = _OfficialClock(timer, ctx.device, config, on_step)
    with clock.attached(t2v), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as generate.py, which ignores every warning
        video = t2v.generate(
            config.prompt, size=(config.width, config.height), frame_num=config.frames, shift=config.shift,
            sample_solver="unipc", sampling_steps=config.steps,
            guide_scale=(config.guidance_low, config.guidance_high),  # (low-noise, high-noise), as generate.py
            n_prompt=config.negative_prompt, seed=config.seed, offload_model=config.parallel.offload == "model",
        )
    result.steps = clock.steps
    result.phases["step_s"] = clock.step_seconds()
    if clock.latents is not None:
        generation.latents = clock.latents
        require_finite(clock.latents, "final latents")
    if video is None:
        return  # ranks other than 0: the official code decodes on rank 0 only
    require_finite(video, "decoded frames")
    frames = ((video.float().permute(1, 2, 3, 0) + 1.0) / 2.0).clamp(0.0, 1.0).cpu().numpy()
    generation.frames = frames
    with timer.phase("save"):
        result.output = save_frames(frames, config.output, config.fps)


class _OfficialClock:
    """Step and phase times of one official generate(), from wrappers around its objects."""

    def __init__(self, timer: PhaseTimer, device: torch.device, config: RunConfig,
                 on_step: Callable[[int], None] | None) -> None:
        self.timer, self.device, self.config, self.on_step = timer, device, config, on_step
        self.clock = HostSteps(timer)  # marked at each step's start; the last forward's end closes the last step
        self.last_forward_end: float | None = None
        self.steps: list[dict[str, Any]] = []
        self.latents: torch.Tensor | None = None

    def step_seconds(self) -> list[float]:
        return self.clock.step_seconds()

    def _end_denoise(self) -> None:
        if self.clock.finish(until=self.last_forward_end) and self.on_step is not None:
            self.on_step(len(self.steps) - 1)

    @contextlib.contextmanager
    def attached(self, t2v: Any) -> Iterator[None]:
        prepare, decode, encoder = t2v._prepare_model_for_timestep, t2v.vae.decode, t2v.text_encoder
        boundary = t2v.boundary * t2v.num_train_timesteps

        def timed_prepare(t: torch.Tensor, boundary_t: float, offload_model: bool) -> Any:
            self.clock.mark()
            if self.on_step is not None and self.steps:
                self.on_step(len(self.steps) - 1)
            value = float(t.item())
            high = value >= boundary
            self.steps.append({"index": len(self.steps), "timestep": int(value), "expert": 0 if high else 1,
                               "guidance": self.config.guidance_high if high else self.config.guidance_low,
                               "guided": True})  # the official code runs both branches at every scale
            return prepare(t, boundary_t, offload_model)

        def timed_decode(zs: list[torch.Tensor]) -> Any:
            self._end_denoise()
            self.latents = zs[0].unsqueeze(0)
            with self.timer.phase("vae_decode"):
                return decode(zs)

        def forward_end(*_: Any) -> None:
            synchronize(self.device)
            self.last_forward_end = time.perf_counter()

        hooks = [m.register_forward_hook(forward_end) for m in (t2v.high_noise_model, t2v.low_noise_model)]
        t2v._prepare_model_for_timestep = timed_prepare
        t2v.vae.decode = timed_decode
        t2v.text_encoder = _TimedCall(encoder, lambda: self.timer.phase("text_encode"))
        try:
            yield
            self._end_denoise()  # ranks that do not decode
        finally:
            for hook in hooks:
                hook.remove()
            del t2v._prepare_model_for_timestep
            del t2v.vae.decode
            t2v.text_encoder = encoder


class _TimedCall:
    """`inner` with every call inside `phase()`; attributes (the encoder's `.model`) pass through."""

    def __init__(self, inner: Any, phase: Callable[[], Any]) -> None:
        self._inner, self._phase = inner, phase

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._phase():
            return self._inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
