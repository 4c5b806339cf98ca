"""Run configuration: frozen dataclasses with the official Wan2.2 defaults, and the rules of what can run.

The CLI and suite files only parse settings into these (settings.py); every other module reads them. The model
presets they name are in presets.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanbench.errors import UserError
from wanbench.presets import ModelPreset, get_preset

# The official Wan2.1/2.2 default negative prompt (wan/configs/shared_config.py, sample_neg_prompt).
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
DEFAULT_PROMPT = (
    "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage."
)


def parse_size(size: str) -> tuple[int, int]:
    """'W*H' (width first, as the official generate.py) -> (width, height)."""
    parts = size.lower().replace("x", "*").split("*")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UserError(f"bad --size {size!r}: give WIDTH*HEIGHT, e.g. 832*480")
    width, height = (int(p) for p in parts)
    return width, height


def parse_guidance(text: str) -> tuple[float, float]:
    """'HIGH,LOW' or one value for both experts."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"bad --guidance {text!r}: give one number or HIGH,LOW, e.g. 4.0,3.0") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise UserError(f"bad --guidance {text!r}: give one number or HIGH,LOW, e.g. 4.0,3.0")


def guided(scale: float) -> bool:
    """Whether a step with this guidance scale runs the unconditional branch. Every scale but 1 does, as in the
    official code, which decides per expert; at 1, uncond + 1 x (cond - uncond) is the conditional prediction."""
    return scale != 1.0


@dataclass(frozen=True)
class ParallelConfig:
    """Degrees of the parallel strategies; their product with cfg must equal the world size."""

    gpus: int = 1
    dp: int = 1  # data-parallel replicas (independent videos); gpus / dp ranks per video
    strategy: str = "auto"  # auto | none | cfg | ulysses | ring | hybrid
    cfg_parallel: bool = False
    ulysses: int = 1
    ring: int = 1
    ulysses_exchange: str = "all-to-all"  # all-to-all (diffusers) | head-blocks (engine/parallel.py)
    fsdp: tuple[str, ...] = ()  # subset of ("dit", "t5")
    t5_cpu: bool = False
    offload: str = "none"  # none | model | group
    max_gpu_memory_gb: float | None = None
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29511



@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one generation. Defaults follow the official Wan2.2 settings."""

    model: str = "a14b"
    engine: str = "wanbench"  # wanbench | official (the Wan team's WanT2V) | diffusers (stock WanPipeline)
    weights: str = "random"  # random | path to a diffusers or an official Wan2.2 folder
    width: int = 1280
    height: int = 720
    frames: int = 81
    steps: int = 40
    seed: int = 42
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = OFFICIAL_NEGATIVE_PROMPT
    guidance_high: float = 4.0
    guidance_low: float = 3.0
    shift: float = 12.0
    boundary: float | None = 0.875
    fps: int = 16
    dtype: str = "bfloat16"
    vae_dtype: str = "float32"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads per rank; 0: torch's own choice (all cores alone, 1 per torchrun worker)
    attention: str = "auto"  # auto | cudnn | flash | sdpa | efficient | math | fa4 (FlashAttention 4, CuTe)
    compile: bool = False  # settings.config_from_settings turns it on where measured faster (engine/defaults.py)
    vae_pipeline: bool = True  # several ranks: VAE decode as a layer pipeline over up to 3 of them (same math)
    cache: str = "none"  # none | fbc:THRESHOLD (diffusers First Block Cache; approximate, opt-in)
    fp8: str = "none"  # none | linear | attention | all (FP8_MODES; approximate)
    output: str = "none"  # none | *.mp4 | *.gif | *.npy
    # The official engine's own options (generate.py / WanT2V); its offload_model, t5_cpu, dit_fsdp, t5_fsdp and
    # ulysses_size are --offload model, --t5-cpu, --fsdp and --ulysses.
    convert_model_dtype: bool = False
    init_on_cpu: bool = True  # WanT2V's default; the official code turns it off under FSDP or Ulysses
    official_code: str = ""  # a Wan2.2 checkout (the folder holding wan/); empty: the installed wan22 package
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    tag: str = ""

    @property
    def size(self) -> str:
        return f"{self.width}*{self.height}"

    @property
    def preset(self) -> ModelPreset:
        return get_preset(self.model)

    @property
    def guidance_scales(self) -> tuple[float, ...]:
        """The guidance scale of each expert that runs: high-noise first, then low-noise where there is one."""
        two = self.preset.two_experts and self.boundary is not None
        return (self.guidance_high, self.guidance_low) if two else (self.guidance_high,)

    @property
    def fp8_linear(self) -> bool:
        return self.fp8 in ("linear", "all")

    @property
    def fp8_attention(self) -> bool:
        return self.fp8 in ("attention", "all")

    @property
    def uses_guidance(self) -> bool:
        """Whether any step runs the unconditional branch (so the negative prompt is encoded)."""
        return any(guided(scale) for scale in self.guidance_scales)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = dict(data)
        parallel = dict(data.pop("parallel", {}) or {})
        if "fsdp" in parallel:
            parallel["fsdp"] = tuple(parallel["fsdp"])
        parallel_known = {f.name for f in dataclasses.fields(ParallelConfig)}
        parallel = {k: v for k, v in parallel.items() if k in parallel_known}
        known = {f.name for f in dataclasses.fields(cls)}
        data = {**LEGACY_DEFAULTS, **data}
        return cls(parallel=ParallelConfig(**parallel), **{k: v for k, v in data.items() if k in known})


def approximations(config: RunConfig) -> list[str]:
    """The approximate modes a configuration runs ('fp8 linear', 'cache fbc:0.05'); empty for the exact path."""
    return ([f"fp8 {config.fp8}"] if config.fp8 != "none" else []) + (
        [f"cache {config.cache}"] if config.cache != "none" else [])


def config_for_preset(model: str, **overrides: Any) -> RunConfig:
    """A RunConfig with the preset's official sampling defaults, then the given overrides."""
    preset = get_preset(model)
    s = preset.sampling
    width, height = parse_size(s.size)
    base: dict[str, Any] = dict(
        model=model, width=width, height=height, frames=s.frames, steps=s.steps, shift=s.shift,
        guidance_high=s.guidance_high, guidance_low=s.guidance_low, boundary=s.boundary, fps=s.fps,
    )
    if model.startswith("tiny"):
        base["dtype"] = "float32"
    base.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig(**base)


MAX_STEPS = 10_000  # far past any sampler's use; more only fills memory with a schedule
MAX_TIMEOUT_S = 1e7  # a timer cannot be set past the clock's range (infinity broke it)


def validate(config: RunConfig) -> list[str]:
    """Refuse what cannot run (UserError); return warnings for what runs but is unofficial."""
    preset = get_preset(config.model)
    notes: list[str] = []
    check_engine(config)  # first: an option of the wrong engine is named as such, not by its own later rule
    multiple = preset.size_multiple
    if config.width <= 0 or config.height <= 0 or config.width % multiple or config.height % multiple:
        raise UserError(
            f"bad --size {config.size}: width and height must be positive multiples of {multiple} "
            f"(official sizes: {', '.join(preset.sampling.sizes)})"
        )
    longest = preset.transformer.rope_max_seq_len * multiple  # RoPE has positions for this many patches a side
    if max(config.width, config.height) > longest:
        raise UserError(f"bad --size {config.size}: {config.model}'s position embedding covers at most {longest} "
                        f"pixels a side (official sizes: {', '.join(preset.sampling.sizes)})")
    if config.size not in preset.sampling.sizes:
        notes.append(
            f"size {config.size} is not an official {preset.name} size ({', '.join(preset.sampling.sizes)})"
        )
    stride_t = preset.vae.stride_t
    if config.frames < 1 or (config.frames - 1) % stride_t:
        raise UserError(f"bad --frames {config.frames}: use {stride_t}n+1 frames, e.g. 81")
    most_frames = (preset.transformer.rope_max_seq_len - 1) * stride_t * preset.transformer.patch_size[0] + 1
    if config.frames > most_frames:
        raise UserError(f"bad --frames {config.frames}: {config.model}'s position embedding covers at most "
                        f"{most_frames} frames (the official: 81)")
    cpus = os.cpu_count() or 1
    if not 0 <= config.threads <= cpus:
        raise UserError(f"bad --threads {config.threads}: use 0 (torch's choice) or a number of threads per rank "
                        f"up to this machine's {cpus}")
    if config.fps < 1:
        raise UserError(f"bad --fps {config.fps}: use 1 or more frames per second (the official: 16)")
    if config.weights != "random":
        weights = Path(config.weights).expanduser()
        if not weights.is_dir():
            what = "is a file, not a folder" if weights.exists() else "no such folder"
            raise UserError(f"--weights {config.weights}: {what}; give 'random' or a Wan2.2 checkpoint folder")
    if not 1 <= config.steps <= MAX_STEPS:
        raise UserError(f"bad --steps {config.steps}: use 1 to {MAX_STEPS} denoising steps (the official: 40)")
    if not 0 <= config.seed < 2**63:  # generate.py's -1 (a random seed) would make runs differ: refused, not mapped
        raise UserError(f"bad --seed {config.seed}: use a fixed seed from 0 to 2^63-1, e.g. 42")
    for name, value in (("guidance", config.guidance_high), ("guidance", config.guidance_low),
                        ("shift", config.shift), ("boundary", config.boundary)):
        if value is not None and not math.isfinite(value):
            raise UserError(f"bad --{name} {value}: use a finite number")
    if min(config.guidance_high, config.guidance_low) < 0:
        raise UserError(f"bad --guidance {config.guidance_high:g},{config.guidance_low:g}: a scale below 0 steers "
                        "away from the prompt; use 0 or more (1: no guidance), e.g. 4.0,3.0")
    if config.boundary is not None and not 0.0 <= config.boundary <= 1.0:
        raise UserError(f"bad --boundary {config.boundary}: use a fraction between 0 and 1, e.g. 0.875")
    if config.shift <= 0:
        raise UserError(f"bad --shift {config.shift}: use a positive number, e.g. 12.0")
    if config.dtype not in DTYPES or config.vae_dtype not in DTYPES:
        raise UserError(f"bad --dtype: choose one of {', '.join(DTYPES)}")
    if config.attention not in ATTENTION_CHOICES:
        raise UserError(f"bad --attention {config.attention!r}: choose one of {', '.join(ATTENTION_CHOICES)}")
    if config.attention == "fa4" and config.device == "cpu":
        raise UserError("--attention fa4 is a GPU kernel (Hopper or newer): drop it with --device cpu")
    if config.dtype == "float32" and config.attention == "fa4":
        raise UserError("--attention fa4 computes in bfloat16 or float16: drop it with --dtype float32")
    if config.cache != "none":
        kind, _, value = config.cache.partition(":")
        try:
            threshold = float(value)
        except ValueError:
            threshold = -1.0
        if kind != "fbc" or threshold <= 0:
            raise UserError(f"bad --cache {config.cache!r}: use none or fbc:THRESHOLD, e.g. fbc:0.05")
        if config.compile:
            raise UserError("--cache and --compile together are not supported yet: drop one")
    if config.fp8 not in FP8_MODES:
        raise UserError(f"bad --fp8 {config.fp8!r}: use one of {', '.join(FP8_MODES)}")
    if config.fp8 != "none" and config.device == "cpu":
        raise UserError(f"--fp8 {config.fp8} needs an NVIDIA GPU ({FP8_GPUS[config.fp8]}); this run is on the "
                        "CPU: drop --fp8")
    if config.fp8_linear and "dit" in config.parallel.fsdp:
        raise UserError(f"--fp8 {config.fp8} with --fsdp dit is not supported (FP8 linear layers already halve the "
                        "experts' memory): drop --fsdp dit, or shard only the text encoder with --fsdp t5")
    out = config.output
    if out != "none" and not out.endswith((".mp4", ".gif", ".npy")):
        raise UserError(f"bad --output {out!r}: use none, or a path ending in .mp4, .gif or .npy")
    if out != "none":
        from wanbench.outputs import check_output_file

        check_output_file(out, "--output")
    if out.endswith(".mp4") and importlib.util.find_spec("imageio_ffmpeg") is None:
        # Without it imageio falls back to another writer that fails only after the whole generation.
        raise UserError(f"--output {out} needs an MP4 writer: pip install imageio-ffmpeg, or use --output "
                        "NAME.npy or none")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return notes


ENGINES = ("wanbench", "official", "diffusers")
# What the official engine needs installed: the Wan team's package without its declared requirements (flash_attn is
# source-only; the rest serve its other pipelines), and what its text-to-video path imports.
OFFICIAL_INSTALL = "pip install --no-deps wan22==2.2.11 && pip install 'wanbench[official]'"


def check_engine(config: RunConfig) -> None:
    """What each engine can run: the official and diffusers engines take the options their users have, no more."""
    if config.engine not in ENGINES:
        raise UserError(f"bad --engine {config.engine!r}: choose one of {', '.join(ENGINES)}")
    official_only = [flag for flag, on in (("--convert-model-dtype", config.convert_model_dtype),
                                           ("--no-init-on-cpu", not config.init_on_cpu),
                                           ("--official-code", bool(config.official_code))) if on]
    if config.engine != "official":
        if official_only:
            raise UserError(f"{official_only[0]} is an option of the official engine: add --engine official or drop it")
        if config.engine == "wanbench":
            return
    p = config.parallel
    name = config.engine
    wanbench_only = [flag for flag, on in (
        ("--compile", config.compile), ("--cache", config.cache != "none"), ("--fp8", config.fp8 != "none"),
        ("--attention", config.attention != "auto"), ("--cfg-parallel", p.cfg_parallel),
        ("--strategy cfg/hybrid", p.strategy in ("cfg", "hybrid")), ("--dp", p.dp > 1),
        ("--ulysses-exchange", p.ulysses_exchange != "all-to-all"), ("--max-gpu-memory", bool(p.max_gpu_memory_gb)),
    ) if on]
    if wanbench_only:
        raise UserError(f"{wanbench_only[0]} is a wanbench engine option; --engine {name} runs as it ships: drop it")
    if name == "diffusers":
        if p.t5_cpu or p.fsdp:
            flag = "--t5-cpu" if p.t5_cpu else "--fsdp"
            raise UserError(f"{flag} is not an option of stock diffusers' WanPipeline: drop it with --engine diffusers")
        if p.ring > 1 or p.strategy == "ring":
            raise UserError("stock diffusers' ring attention needs an attention backend that returns the log-sum-exp, "
                            "which its default (native SDPA) does not: use --ulysses N with --engine diffusers")
        if p.offload != "none" and p.gpus > 1:
            raise UserError("--offload is for one GPU: with --engine diffusers on several, drop it (--ulysses N "
                            "splits the work)")
        return
    if not config.official_code and importlib.util.find_spec("wan") is None:
        raise UserError(f"--engine official needs the Wan team's code: {OFFICIAL_INSTALL} (or --official-code "
                        "CHECKOUT)")
    if config.model not in ("a14b", "tiny"):
        raise UserError(f"--engine official runs the official WanT2V (T2V-A14B), not {config.model}: use --model a14b "
                        "(or tiny in tests)")
    if config.model == "a14b" and config.dtype != "bfloat16":
        raise UserError("--engine official computes in bfloat16 (its param_dtype): drop --dtype")
    if config.vae_dtype != "float32":
        raise UserError("--engine official decodes with its VAE in float32 (Wan2_1_VAE's default): drop --vae-dtype")
    if p.offload == "group":
        raise UserError("--offload group is not an option of the official code: use --offload model (offload_model)")
    if p.ring > 1 or p.strategy == "ring":
        raise UserError("the official code has no ring attention: use --ulysses N (its ulysses_size)")
    if p.ulysses > 1 and p.ulysses != p.gpus:
        raise UserError(f"the official code's ulysses_size equals the number of GPUs: use --ulysses {p.gpus}")
    if config.device == "cpu" and (p.gpus > 1 or p.offload != "none"):
        raise UserError("the official code's offload and multi-GPU paths need CUDA: run it on one CPU process "
                        "without --offload, or on GPUs")


DTYPES = ("bfloat16", "float16", "float32")
FP8_MODES = ("none", "linear", "attention", "all")  # linear layers (torchao), self-attention (cuDNN), both
_FP8_ATTENTION_GPUS = "Hopper or newer, for cuDNN's FP8 attention: H100, H200, B200"
FP8_GPUS = {"linear": "FP8 tensor cores, compute capability 8.9 or newer: L4, L40S, H100, H200, B200",
            "attention": _FP8_ATTENTION_GPUS, "all": _FP8_ATTENTION_GPUS}
# Results recorded before a field existed ran without what it turns on; its default changed since.
LEGACY_DEFAULTS: dict[str, Any] = {"vae_pipeline": False}
ATTENTION_CHOICES = ("auto", "cudnn", "flash", "sdpa", "efficient", "math", "fa4")
