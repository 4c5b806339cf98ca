"""Flat settings (CLI flags, suite-file keys) -> RunConfig: the one way a configuration is made.

The preset's official defaults, then the settings given, then the engine's defaults for what was not given
(engine/defaults.py: compile where measured faster on the hardware found).

Keys are RunConfig and ParallelConfig field names, plus `size` ("W*H"), `guidance` ("HIGH,LOW" or one number)
and `fsdp` ("dit,t5" or a list). Every value is checked against its field's type, so a suite's `steps = "two"`,
`frames = true` or `compile = "false"` is refused in one line instead of running something else.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from wanbench.config import ParallelConfig, RunConfig, config_for_preset, parse_guidance, parse_size
from wanbench.engine.defaults import with_defaults
from wanbench.errors import UserError

_PARALLEL_FIELDS = {f.name: f for f in dataclasses.fields(ParallelConfig)}
_RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig) if f.name not in ("parallel", "model")}
SPECIAL_KEYS = ("model", "size", "guidance", "fsdp")
# every key a row of settings takes (what is not a field itself is derived: width/height from size, ...)
RUN_KEYS = sorted({*SPECIAL_KEYS, *_PARALLEL_FIELDS, *_RUN_FIELDS} - {"width", "height", "guidance_high",
                                                                      "guidance_low"})


_FLAG = re.compile(r"--(no-)?([a-z][a-z0-9-]*)")
_FLAG_KEYS = {"max-gpu-memory": "max_gpu_memory_gb"}  # the flags whose key is not their name with underscores


def in_suite_terms(message: str) -> str:
    """A refusal worded for the CLI, reworded for a suite file: each flag that is a setting named by its key
    (`--ulysses-exchange` -> `ulysses_exchange`, `--no-compile` -> `compile = false`)."""
    def key(match: re.Match[str]) -> str:
        name = _FLAG_KEYS.get(match[2], match[2].replace("-", "_"))
        if name not in _RUN_FIELDS and name not in _PARALLEL_FIELDS and name not in SPECIAL_KEYS:
            return match[0]
        return f"{name} = false" if match[1] else name

    return _FLAG.sub(key, message)


def shown(value: Any) -> str:
    """A value as a suite file spells it ("two", true, 2.5)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _kind(value: Any) -> str:
    return {bool: "true/false", int: "a whole number", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__)


def typed(key: str, value: Any, annotation: str, example: Any = None) -> Any:
    """`value` if it has the type `annotation` names ('int', 'float', 'bool', 'str', 'float | None'), else a
    UserError naming the key, what it got and what it takes. bool is not taken for a number, nor a number for
    a bool."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    if value is None and optional:
        return None
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(base, True)
    if not ok:
        wanted = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string"}[base]
        hint = f", e.g. {key} = {shown(example)}" if example not in (None, "") else ""
        if base == "bool":
            hint = f", e.g. {key} = true"
        raise UserError(f"bad setting {key} = {shown(value)} ({_kind(value)}): {key} takes {wanted}{hint}")
    return float(value) if base == "float" else value


def _fsdp(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(x for x in value.split(",") if x)
    if isinstance(value, list | tuple) and all(isinstance(x, str) for x in value):
        return tuple(value)
    raise UserError(f"bad setting fsdp = {shown(value)}: fsdp takes \"dit\", \"t5\" or \"dit,t5\"")


def config_from_settings(settings: Mapping[str, Any]) -> RunConfig:
    """A RunConfig from flat settings over the model preset's official defaults; a None value means 'not given'."""
    settings = {k: v for k, v in settings.items() if v is not None}
    model = typed("model", settings.pop("model", "a14b"), "str")
    overrides: dict[str, Any] = {}
    parallel: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "size":
            overrides["width"], overrides["height"] = parse_size(typed(key, value, "str", "832*480"))
        elif key == "guidance":
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise UserError(f"bad setting guidance = {shown(value)}: guidance takes a number or \"HIGH,LOW\"")
            overrides["guidance_high"], overrides["guidance_low"] = parse_guidance(str(value))
        elif key == "fsdp":
            parallel["fsdp"] = _fsdp(value)
        elif key in _PARALLEL_FIELDS:
            f = _PARALLEL_FIELDS[key]
            parallel[key] = typed(key, value, str(f.type), f.default)
        elif key in _RUN_FIELDS:
            f = _RUN_FIELDS[key]
            overrides[key] = typed(key, value, str(f.type), f.default)
        else:
            from wanbench.mlperf.settings import FLAGS as LOADGEN_KEYS

            if key in LOADGEN_KEYS:
                raise UserError(f"{key} is a setting of LoadGen, not of a run: put it under [mlperf]")
            raise UserError(f"unknown setting {key!r}: use RunConfig or parallel field names "
                            "(model, size, frames, steps, guidance, gpus, ulysses, fsdp, ...)")
    config = config_for_preset(model, parallel=ParallelConfig(**parallel), **overrides)
    return with_defaults(config, set(settings))
