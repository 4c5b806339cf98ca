"""RunResult: one JSON record per run (schema in README "Result schema")."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
PHASES = ("load_s", "compile_s", "text_encode_s", "denoise_s", "vae_decode_s", "save_s")


@dataclass
class RunResult:
    config: dict[str, Any]
    env: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    # the generation's energy (measure/energy.py): joules, seconds, average watts per GPU, or why not measured
    energy: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    flops: dict[str, Any] = field(default_factory=dict)
    mfu: dict[str, Any] = field(default_factory=dict)
    flags: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # per step: index, timestep, expert
    output: str | None = None
    per_rank_phases: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def phase_summary(seconds: dict[str, float], step_s: list[float], total_s: float) -> dict[str, Any]:
    """The phases block: each phase measured on its own, total measured on its own, other = the gap."""
    phases: dict[str, Any] = {name: seconds.get(name.removesuffix("_s"), 0.0) for name in PHASES}
    phases["step_s"] = step_s
    phases["total_s"] = total_s
    phases["other_s"] = total_s - sum(phases[name] for name in PHASES)
    return phases
