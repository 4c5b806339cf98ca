"""Suites: axes x fixed settings (or an explicit list) -> the configurations to run.

A suite file is TOML:
    name = "mine"
    warmup = 1            # uncounted runs per configuration (each in the same worker, after loading)
    warmup_steps = 0      # steps of a warm-up run; 0 = the configuration's own
    repeats = 3           # counted runs per configuration
    cooldown_s = 10
    timeout_s = 1800      # per configuration (its worker: load, warm-up and repeats)
    sample_interval_s = 0.5
    [fixed]
    model = "a14b"
    size = "832*480"
    [axes]
    steps = [10, 20]
    gpus = [1, 2]
    [[configs]]           # optional explicit list, each merged over [fixed]; used instead of axes
    gpus = 2
    strategy = "cfg"
Keys are RunConfig fields (model, weights, frames, steps, seed, prompt, ...), `size` as W*H,
`guidance` as "HIGH,LOW", and the parallel fields (gpus, strategy, cfg_parallel, ulysses, ulysses_exchange, ring,
fsdp, t5_cpu, offload, max_gpu_memory_gb). Values are checked against each field's type (settings.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanbench.config import MAX_STEPS, MAX_TIMEOUT_S, OFFICIAL_INSTALL, RunConfig
from wanbench.errors import UserError
from wanbench.mlperf.settings import FLAGS as LOADGEN_FLAGS
from wanbench.mlperf.settings import LoadGenSettings, check_scenario, loadgen_settings
from wanbench.settings import RUN_KEYS, config_from_settings, in_suite_terms, typed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib



@dataclass(frozen=True)
class SuiteConfig:
    name: str
    fixed: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    configs: tuple[dict[str, Any], ...] = ()
    warmup: int = 1
    warmup_steps: int = 0
    repeats: int = 3
    cooldown_s: float = 0.0
    timeout_s: float = 1800.0
    sample_interval_s: float = 0.5
    # When set ([mlperf] in a file), each configuration is one MLPerf run through LoadGen instead of repeats.
    mlperf: LoadGenSettings | None = None
    notes: tuple[str, ...] = ()  # said once when the suite starts (what a preset left out, and why)


def run_config_from(settings: dict[str, Any]) -> RunConfig:
    return config_from_settings(settings)


def expand(suite: SuiteConfig) -> list[RunConfig]:
    if suite.configs:
        rows = [{**suite.fixed, **row} for row in suite.configs]
    else:
        names = list(suite.axes)
        rows = [{**suite.fixed, **dict(zip(names, values, strict=False))}
                for values in itertools.product(*(suite.axes[n] for n in names))]
    return [run_config_from(row) for row in rows] if rows else [run_config_from(dict(suite.fixed))]


def label(config: RunConfig) -> str:
    p = config.parallel
    from wanbench.models.footprint import runs_on_cpu

    unit = "CPU proc" if runs_on_cpu(config) else "GPU"
    parts = [config.model, f"{config.size}x{config.frames}", f"{config.steps} steps", f"{p.gpus} {unit}"]
    if config.engine != "wanbench":
        parts.insert(0, config.engine)
    if config.engine == "official":
        parts += ["convert_model_dtype"] if config.convert_model_dtype else []
        parts += ["init_on_cpu"] if config.init_on_cpu and p.gpus == 1 and "dit" not in p.fsdp else []
        parts += ["t5_cpu"] if p.t5_cpu else []
    if p.gpus > 1 or p.strategy != "auto":
        parts.append(_strategy_name(config) if not (p.cfg_parallel or p.ulysses > 1 or p.ring > 1) else
                     "+".join(x for x in (["cfg"] if p.cfg_parallel else []) + ([f"ulysses{p.ulysses}"] if
                              p.ulysses > 1 else []) + ([f"ring{p.ring}"] if p.ring > 1 else [])))
    if p.ulysses_exchange != "all-to-all":
        parts.append(f"{p.ulysses_exchange} exchange")
    if p.fsdp:
        parts.append("fsdp " + ",".join(p.fsdp))
    if config.compile:
        parts.append("compiled")
    if config.attention != "auto":
        parts.append(f"attention {config.attention}")
    if not config.vae_pipeline and p.gpus > 1:
        parts.append("one-rank decode")
    if p.offload != "none":
        parts.append(f"offload {p.offload}")
    if p.max_gpu_memory_gb:
        parts.append(f"cap {p.max_gpu_memory_gb:g} GB")
    if config.fp8 != "none":
        parts.append(f"APPROXIMATE fp8 {config.fp8}")
    if config.cache != "none":
        parts.append(f"APPROXIMATE cache {config.cache}")
    if config.threads:
        parts.append(f"{config.threads} thread{'' if config.threads == 1 else 's'}")
    if config.tag:
        parts.append(config.tag)
    return " | ".join(parts)


def _strategy_name(config: RunConfig) -> str:
    """'auto (cfg 2)': the strategy asked for, and the degrees it resolves to where they can be known."""
    from wanbench.engine.parallel import resolve_dims

    try:
        resolved = resolve_dims(config, config.parallel.gpus).describe()
    except UserError:
        return config.parallel.strategy
    return f"{config.parallel.strategy} ({resolved})"


def load_suite_file(path: str | Path) -> SuiteConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no suite file {path}: give a TOML file or --preset NAME") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a suite file: give a TOML file or --preset NAME") from None
    except UnicodeDecodeError:
        raise UserError(f"bad suite file {path}: not UTF-8 text; give a TOML file or --preset NAME") from None
    except OSError as exc:
        raise UserError(f"cannot read suite file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"bad suite file {path}: {exc}") from None
    known = {f.name for f in dataclasses.fields(SuiteConfig)}
    unknown = set(data) - known
    if unknown:
        import difflib

        def guess(key: str) -> str:
            if key in LOADGEN_FLAGS:
                return f"{key} (a setting of LoadGen: put it under [mlperf])"
            if key in RUN_KEYS:
                return f"{key} (a setting of a run: put it under [fixed])"
            for names, where in ((known, ""), (RUN_KEYS, ", a setting of a run: put it under [fixed]")):
                if match := difflib.get_close_matches(key, names, n=1, cutoff=0.75):
                    return f"{key} (did you mean {match[0]}{where}?)"
            return key

        guesses = [guess(k) for k in sorted(unknown)]
        raise UserError(f"unknown keys in {path}: {', '.join(guesses)}; settings go under [fixed], [axes] or "
                        "[[configs]]")
    data.setdefault("name", re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-_") or "suite")
    check_suite_types(data, path)
    if not (data.get("fixed") or data.get("axes") or data.get("configs")):
        raise UserError(f"{path} sets no run: give [fixed] settings (e.g. model = \"a14b\"), [axes] or "
                        "[[configs]]")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", data["name"]):
        raise UserError(f"bad suite file {path}: name = {data['name']!r} names the results folder: use letters, "
                        "digits, '.', '_' and '-', starting with a letter or digit")
    data["configs"] = tuple(data.get("configs", ()))
    try:
        if "mlperf" in data:
            loadgen = loadgen_settings(data["mlperf"])
            if loadgen.prompts and not Path(loadgen.prompts).expanduser().is_absolute():  # beside the suite file
                loadgen = dataclasses.replace(loadgen, prompts=str(path.parent / loadgen.prompts))
            data["mlperf"] = loadgen
            data.setdefault("repeats", 1)
        suite = SuiteConfig(**data)
        check_bounds(suite)
        configs = expand(suite)  # every setting of every row parsed now, so that a mistake names this file
        for config in configs:
            if suite.mlperf:
                check_scenario(config, suite.mlperf)
        check_distinct(configs)
    except UserError as exc:
        raise UserError(f"bad suite file {path}: {in_suite_terms(str(exc))}") from None
    return suite


def check_distinct(configs: list[RunConfig]) -> None:
    """Refuse two rows that make the same run: the second would be skipped as already done."""
    from wanbench.store import config_key

    seen: dict[str, int] = {}
    for number, config in enumerate(configs, 1):
        first = seen.setdefault(config_key(config.to_dict()), number)
        if first != number:
            raise UserError(f"configurations {first} and {number} are the same run ({label(config)}): drop one, "
                            "or raise repeats for more samples of it")


def check_suite_types(data: dict[str, Any], path: Path) -> None:
    """Refuse a suite whose top-level values have the wrong type (each setting is checked when expanded)."""
    try:
        for f in dataclasses.fields(SuiteConfig):
            if f.name in data and f.name not in ("fixed", "axes", "configs", "mlperf"):
                example = f.default if f.default is not dataclasses.MISSING else f"my-{f.name}"
                typed(f.name, data[f.name], str(f.type), example)
        for name in ("fixed", "axes", "mlperf"):
            if not isinstance(data.get(name, {}), dict):
                raise UserError(f"[{name}] must be a table of settings")
        for key, values in data.get("axes", {}).items():
            if not isinstance(values, list) or not values:
                raise UserError(f"axis {key} = {values!r} must be a non-empty list, e.g. {key} = [10, 20]")
        configs = data.get("configs", [])
        if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
            raise UserError("configs must be [[configs]] tables of settings")
        if configs and data.get("axes"):
            raise UserError("give [axes] or [[configs]], not both: [[configs]] lists the runs one by one, [axes] "
                            "makes their product (put an axis's values into the [[configs]] rows)")
        suite_keys = {f.name for f in dataclasses.fields(SuiteConfig)} - {"fixed", "axes", "configs", "mlperf"}
        for table, rows in (("[fixed]", [data.get("fixed", {})]), ("[axes]", [data.get("axes", {})]),
                            ("[[configs]]", configs)):
            misplaced = sorted(suite_keys & {key for row in rows for key in row})
            if misplaced:
                key = misplaced[0]
                raise UserError(f"{key} in {table} is a setting of the suite, not of a run: put `{key} = ...` at "
                                "the top of the file, before the first [table]")
    except UserError as exc:
        raise UserError(f"bad suite file {path}: {exc}") from None


MAX_REPEATS = 10_000
# The suite's own numbers: (field, the bench flag that overrides it, the least it takes, what to give).
BOUNDS = (
    ("warmup", "--warmup", 0, "0 or more"), ("warmup_steps", "--warmup-steps", 0, "0 or more"),
    ("repeats", "--repeats", 1, "1 or more"), ("cooldown_s", "--cooldown", 0, "0 or more"),
    ("sample_interval_s", "--sample-interval", 0, "0 (off) or a number of seconds"),
)


def check_bounds(suite: SuiteConfig, as_flags: bool = False) -> None:
    """Refuse a suite's out-of-range numbers, named as its file spells them (`repeats = 0`) or, after bench's
    flags override them, as the flags do (`--repeats 0`): the one check for both."""
    def bad(name: str, flag: str, value: float, wanted: str) -> UserError:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        return UserError(f"bad {flag} {shown}: give {wanted}" if as_flags else f"{name} = {shown}: give {wanted}")

    for name, flag, least, wanted in BOUNDS:
        value = getattr(suite, name)
        if not least <= value < math.inf:  # NaN included
            raise bad(name, flag, value, wanted)
    if suite.warmup_steps > MAX_STEPS:
        raise bad("warmup_steps", "--warmup-steps", suite.warmup_steps, f"0 to {MAX_STEPS}")
    for name, flag, least in (("warmup", "--warmup", 0), ("repeats", "--repeats", 1)):
        if getattr(suite, name) > MAX_REPEATS:  # a median needs no more; past it a typo runs for days
            raise bad(name, flag, getattr(suite, name), f"{least} to {MAX_REPEATS}")
    if not 0 < suite.timeout_s <= MAX_TIMEOUT_S:
        raise bad("timeout_s", "--timeout", suite.timeout_s, "a positive number of seconds per configuration, up "
                  f"to {MAX_TIMEOUT_S:g}")
    if suite.mlperf and suite.repeats != 1:
        raise bad("repeats", "--repeats", suite.repeats, "1 with [mlperf] (a configuration is one LoadGen run): ask "
                  "for more queries with min_query_count in [mlperf]")


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def preset_suite(name: str, gpus_available: int | None = None) -> SuiteConfig:
    n = gpu_count() if gpus_available is None else gpus_available
    if name == "smoke":
        # One thread per rank in every row, so that 1 and 2 processes differ only in what the column says; five
        # repeats, so that one slow repeat moves no median; steps far enough apart for the step fit.
        return SuiteConfig(
            name="smoke", fixed={"model": "tiny", "device": "cpu", "threads": 1},
            axes={"steps": [4, 32], "gpus": [1, 2]},
            warmup=1, repeats=5, cooldown_s=0.0, timeout_s=300.0, sample_interval_s=0.2,
        )
    if name == "seed":
        # The seed report's runs: the official generate.py as it ran them (one GPU: --offload_model True
        # --convert_model_dtype; several: --dit_fsdp --t5_fsdp --ulysses_size N), beside wanbench's defaults.
        # Without the official code installed, wanbench's rows run alone and the suite says how to add the others.
        gpus = sorted({1, max(1, n)})
        with_official = importlib.util.find_spec("wan") is not None
        rows = []
        for steps in (10, 20):
            for g in gpus:
                official = ({"offload": "model", "convert_model_dtype": True} if g == 1 else
                            {"fsdp": "dit,t5", "ulysses": g})
                rows += [{"steps": steps, "gpus": g, "engine": "official", **official}] if with_official else []
                rows += [{"steps": steps, "gpus": g}]
        return SuiteConfig(
            name="seed", fixed={"model": "a14b", "weights": "random", "size": "480*832", "frames": 81},
            configs=tuple(rows), warmup=1, warmup_steps=2, repeats=2, cooldown_s=10.0, timeout_s=1800.0,
            notes=() if with_official else (
                f"the official code is not installed, so the seed's own generate.py runs are left out: "
                f"{OFFICIAL_INSTALL} adds them",),
        )
    if name == "scaling":
        rows: list[dict[str, Any]] = [{"gpus": 1}]
        for g in (2, 4, 8):
            if g > max(n, 1):
                break
            rows += [{"gpus": g, "ulysses": g}, {"gpus": g, "ulysses": g, "fsdp": "dit,t5"}]
            rows += [{"gpus": 2, "cfg_parallel": True}] if g == 2 else [
                {"gpus": g, "cfg_parallel": True, "ulysses": g // 2}]
        return SuiteConfig(
            # Eager and cuDNN throughout, so that every row has its like-for-like 1-GPU baseline: compile is
            # off by default under FSDP, and FlashAttention 4, which auto takes where installed, cannot run
            # under diffusers' Ulysses.
            name="scaling", fixed={"model": "a14b", "weights": "random", "size": "480*832", "frames": 81,
                                   "steps": 20, "compile": False, "attention": "cudnn"},
            configs=tuple(rows), warmup=1, warmup_steps=2, repeats=2, cooldown_s=10.0, timeout_s=1800.0,
        )
    if name == "mlperf":
        # MLPerf Inference text-to-video reference settings: 720x1280, 81 frames, 20 steps, guidance 4/3,
        # boundary 0.875, seed 42, fp32 VAE; SingleStream across all GPUs with the auto strategy.
        return SuiteConfig(
            name="mlperf", fixed={"model": "a14b", "weights": "random", "size": "1280*720", "frames": 81,
                                  "steps": 20, "seed": 42, "vae_dtype": "float32", "gpus": max(1, n)},
            warmup=1, warmup_steps=2, repeats=1, timeout_s=3600.0,
            mlperf=LoadGenSettings(min_duration_s=600.0),
        )
    raise UserError(f"unknown suite preset {name!r}: choose smoke, seed, scaling or mlperf, or a TOML file")


def default_preset() -> str:
    """`seed` on a GPU machine, `smoke` on a CPU-only one."""
    return "seed" if gpu_count() > 0 else "smoke"
