"""From run records to per-configuration rows, scaling, step fits and recommendations (no I/O).

Every number in a report is computed here from stored run records; the report only formats.
Definitions:
  generation_s = total_s - load_s - compile_s (text encode + denoise + decode + save + other)
  speedup      = generation_s median of the 1-GPU row / this row's, for the same settings
  efficiency   = speedup / GPUs
  MFU          = analytic denoise FLOPs / denoise_s median / GPUs / peak dense bf16 rate
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wanbench.analysis.flops import run_flops
from wanbench.analysis.peaks import peak_tflops
from wanbench.analysis.plausibility import judge
from wanbench.analysis.scaling import StepFit, describe_efficiency, efficiency, fit_steps, speedup
from wanbench.analysis.stats import Stat, summarize
from wanbench.config import get_preset

OTHER_LIMIT_FRACTION = 0.05
OTHER_LIMIT_S = 0.5
# Card classes by the size they are sold as, with the total NVML reports for them in GB of 10^9 bytes,
# the unit of every memory figure here (an H200 sold as "141 GB" reports 143,771 MiB = 150.8 GB).
MEMORY_TIERS_GB = (("24 GB (RTX 4090)", 25.8), ("32 GB (RTX 5090)", 34.2), ("48 GB (L40S)", 48.3),
                   ("80 GB (H100)", 85.5), ("141 GB (H200)", 150.8))


@dataclass
class ConfigRow:
    label: str
    key: str
    config: dict[str, Any]
    gpus: int
    gpu_name: str | None
    runs_total: int
    runs_ok: int
    failures: list[dict[str, str]]
    generation: Stat | None
    denoise: Stat | None
    step: Stat | None
    load: Stat | None
    compile: Stat | None
    total: Stat | None
    other_max_s: float | None
    peak_gb: float | None
    peak_source: str | None
    avg_gb: float | None
    capacity_gb: float | None
    mfu: float | None
    implied_tflops_per_gpu: float | None
    verdict: str
    flags: list[str] = field(default_factory=list)
    speedup: float | None = None
    step_speedup: float | None = None
    efficiency: float | None = None
    efficiency_words: str | None = None
    baseline_label: str | None = None
    run_ids: list[str] = field(default_factory=list)
    # torch allocator peaks per GPU (largest rank): what tensors needed, without the allocator's cache
    load_allocated_gb: float | None = None
    denoise_allocated_gb: float | None = None
    # the largest host RSS of any rank: what offloading moves to the host has to fit there
    host_peak_gb: float | None = None

    @property
    def peak_pct(self) -> float | None:
        if self.peak_gb is None or not self.capacity_gb:
            return None
        return 100 * self.peak_gb / self.capacity_gb

    @property
    def gpu_seconds(self) -> float | None:
        return self.generation.median * self.gpus if self.generation else None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("config",)}
        for name in ("generation", "denoise", "step", "load", "compile", "total"):
            stat = getattr(self, name)
            out[name] = stat.to_dict() if stat else None
        out["peak_pct"] = self.peak_pct
        out["gpu_seconds"] = self.gpu_seconds
        out["settings"] = settings_of(self.config)
        return out


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    p = config.get("parallel", {})
    return {"model": config.get("model"), "size": f"{config.get('width')}*{config.get('height')}",
            "frames": config.get("frames"), "steps": config.get("steps"), "gpus": p.get("gpus", 1),
            "strategy": p.get("strategy"), "cfg_parallel": p.get("cfg_parallel"), "ulysses": p.get("ulysses"),
            "ring": p.get("ring"), "fsdp": p.get("fsdp"), "offload": p.get("offload"),
            "compile": config.get("compile"), "weights": config.get("weights")}


def generation_seconds(record: dict[str, Any]) -> float:
    p = record["phases"]
    return p["total_s"] - p.get("load_s", 0.0) - p.get("compile_s", 0.0)


def _peak(records: list[dict[str, Any]]) -> tuple[float | None, str | None, float | None, float | None]:
    """(peak GB per GPU, source, average GB, capacity GB): NVML samples if any, else torch allocator."""
    nvml = [g for r in records for g in (r.get("memory") or {}).get("gpus", []) if g.get("peak_gb") is not None]
    if nvml:
        avg = [g["avg_gb"] for g in nvml if g.get("avg_gb") is not None]
        return (max(g["peak_gb"] for g in nvml), "NVML used memory", sum(avg) / len(avg) if avg else None,
                nvml[0].get("capacity_gb"))
    ranks = [x for r in records for x in (r.get("memory") or {}).get("ranks", []) if x.get("max_allocated_gb")]
    if ranks:
        return (max(x["max_allocated_gb"] for x in ranks), "torch max allocated", None, ranks[0].get("capacity_gb"))
    host = [(r.get("memory") or {}).get("host_rss") or {} for r in records]
    peaks = [h["peak_gb"] for h in host if h.get("peak_gb") is not None]
    if peaks:
        avg = [h["avg_gb"] for h in host if h.get("avg_gb") is not None]
        return max(peaks), "host RSS of the worker tree (no GPU)", sum(avg) / len(avg) if avg else None, None
    return None, None, None, None


def _allocated(records: list[dict[str, Any]], phase: str) -> float | None:
    """The largest torch allocator peak of one phase on any rank of any run (GB)."""
    values = [x.get("phase_peak_allocated_gb", {}).get(phase) for r in records
              for x in (r.get("memory") or {}).get("ranks", [])]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _host_peak(records: list[dict[str, Any]]) -> float | None:
    """The largest peak RSS of any rank of any run (GB)."""
    values = [x.get("host_peak_rss_gb") for r in records for x in (r.get("memory") or {}).get("ranks", [])]
    values += [(r.get("memory") or {}).get("host_peak_rss_gb") for r in records]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def make_row(records: list[dict[str, Any]], peak_override: float | None = None) -> ConfigRow:
    first = records[0]
    config = first["config"]
    ok = [r for r in records if r.get("status") == "ok"]
    gpus = int(config.get("parallel", {}).get("gpus", 1))
    env = next((r.get("env") for r in ok if r.get("env")), first.get("env") or {})
    gpu_name = (env.get("gpu_names") or [None])[0]
    generation = summarize([generation_seconds(r) for r in ok])
    denoise = summarize([r["phases"]["denoise_s"] for r in ok])
    peak_gb, source, avg_gb, capacity = _peak(ok)
    row = ConfigRow(
        label=first.get("label") or config.get("tag") or first.get("config_key", "?"),
        key=first.get("config_key", ""), config=config, gpus=gpus, gpu_name=gpu_name,
        runs_total=len(records), runs_ok=len(ok),
        failures=[{"status": r.get("status", "failed"), "error": r.get("error") or ""} for r in records
                  if r.get("status") != "ok"],
        generation=generation, denoise=denoise,
        step=summarize([s for r in ok for s in r["phases"].get("step_s", [])]),
        load=summarize([r["phases"].get("load_s", 0.0) for r in ok]),
        compile=summarize([r["phases"].get("compile_s", 0.0) for r in ok if r["phases"].get("compile_s")]),
        total=summarize([r["phases"]["total_s"] for r in ok]),
        other_max_s=max((abs(r["phases"].get("other_s", 0.0)) for r in ok), default=None),
        peak_gb=peak_gb, peak_source=source, avg_gb=avg_gb, capacity_gb=capacity,
        mfu=None, implied_tflops_per_gpu=None, verdict="unknown",
        run_ids=[r.get("run_id", "") for r in records],
        load_allocated_gb=_allocated(ok, "load"), denoise_allocated_gb=_allocated(ok, "denoise"),
        host_peak_gb=_host_peak(ok),
    )
    _judge(row, config, peak_override)
    _flag(row, ok)
    return row


def _judge(row: ConfigRow, config: dict[str, Any], peak_override: float | None = None) -> None:
    if row.denoise is None:
        return
    preset = get_preset(config["model"])
    flops = run_flops(preset, config["width"], config["height"], config["frames"], config["steps"],
                      config.get("guidance_high", 4.0) > 1.0)
    peak = peak_override or peak_tflops(row.gpu_name or "")
    verdict = judge(flops.denoise, row.denoise.median, row.gpus, peak)
    row.mfu, row.implied_tflops_per_gpu, row.verdict = verdict.mfu, verdict.implied_tflops_per_gpu, verdict.verdict
    if row.gpu_name is None:
        row.verdict = "no GPU"


def _flag(row: ConfigRow, ok: list[dict[str, Any]]) -> None:
    for name in ("generation", "step"):
        stat = getattr(row, name)
        if stat is not None and stat.noisy:
            row.flags.append(f"{name} time varies: CV {stat.cv:.1%} over {stat.n} (limit 5%)")
    if row.verdict in ("impossible", "suspicious"):
        row.flags.append(f"{row.verdict}: denoise implies {row.implied_tflops_per_gpu:.0f} TFLOP/s per GPU "
                         f"({row.mfu:.0%} of peak)")
    if row.total is not None and row.other_max_s is not None:
        limit = max(OTHER_LIMIT_S, OTHER_LIMIT_FRACTION * row.total.median)
        if row.other_max_s > limit:
            row.flags.append(f"untimed time: other_s up to {row.other_max_s:.2f} s of total")
    for record in ok:
        for flag in record.get("flags", []):
            text = f"{flag.get('kind')}: {flag.get('message')}"
            if text not in row.flags:
                row.flags.append(text)
    if row.runs_ok < row.runs_total:
        row.flags.append(f"{row.runs_total - row.runs_ok} of {row.runs_total} runs failed")


def comparable_key(config: dict[str, Any]) -> tuple:
    """Settings that must match for a scaling comparison: all but the parallel layout and labels."""
    skip = {"parallel", "output", "tag", "device"}
    return tuple(sorted((k, str(v)) for k, v in config.items() if k not in skip))


def add_scaling(rows: list[ConfigRow]) -> None:
    singles = {}
    for row in rows:
        p = row.config.get("parallel", {})
        if row.gpus == 1 and p.get("offload", "none") == "none" and row.generation:
            singles.setdefault(comparable_key(row.config), row)
    for row in rows:
        base = singles.get(comparable_key(row.config))
        if base is None or row.generation is None or base is row:
            continue
        row.speedup = speedup(base.generation.median, row.generation.median)
        if base.step and row.step:
            row.step_speedup = speedup(base.step.median, row.step.median)
        row.efficiency = efficiency(row.speedup, row.gpus)
        row.efficiency_words = describe_efficiency(row.efficiency)
        row.baseline_label = base.label


def step_fits(rows: list[ConfigRow], records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """time = fixed + per_step x steps, per group of rows that differ only in steps (all ok runs as points)."""
    groups: dict[tuple, list[ConfigRow]] = {}
    for row in rows:
        key = tuple(sorted((k, str(v)) for k, v in row.config.items() if k not in ("steps", "output", "tag")))
        groups.setdefault(key, []).append(row)
    fits = []
    for members in groups.values():
        points = [(r["config"]["steps"], generation_seconds(r)) for m in members for r in records[m.key]
                  if r.get("status") == "ok"]
        fit: StepFit | None = fit_steps([p[0] for p in points], [p[1] for p in points])
        if fit is not None:
            fits.append({"labels": [m.label for m in members], "fixed_s": fit.fixed_s,
                         "per_step_s": fit.per_step_s, "r2": fit.r2, "points": points})
    return fits


def recommendations(rows: list[ConfigRow]) -> list[str]:
    ok = [r for r in rows if r.generation is not None and r.verdict not in ("impossible",)]
    if not ok:
        return ["No configuration completed: nothing to recommend."]
    out = []
    fastest = min(ok, key=lambda r: r.generation.median)
    out.append(f"Fastest: {fastest.label} — {fastest.generation.median:.2f} s per video.")
    cheapest = min(ok, key=lambda r: r.gpu_seconds)
    out.append(f"Cheapest in GPU time: {cheapest.label} — {cheapest.gpu_seconds:.1f} GPU-seconds per video.")
    sized = [r for r in ok if r.peak_gb is not None and not (r.peak_source or "").startswith("host")]
    previous = None
    for card, capacity_gb in MEMORY_TIERS_GB:
        fits = [r for r in sized if needed_gb(r) <= capacity_gb]
        if not fits:
            continue
        best = min(fits, key=lambda r: r.generation.median)
        if best is not previous:
            loading = (f", {best.load_allocated_gb:.1f} GB while loading"
                       if (best.load_allocated_gb or 0.0) > best.peak_gb else "")
            host = (f"; it needs {best.host_peak_gb:.0f} GB of host memory"
                    if offloaded(best) and best.host_peak_gb is not None else "")
            out.append(f"Fastest that fits a {card} card, {capacity_gb:g} GB (peak {best.peak_gb:.1f} GB per GPU"
                       f"{loading}): {best.label} — {best.generation.median:.2f} s per video{host}.")
        previous = best
    return out


def offloaded(row: ConfigRow) -> bool:
    """Whether `row` keeps weights in host memory (--offload, --t5-cpu)."""
    parallel = row.config.get("parallel", {})
    return parallel.get("offload", "none") != "none" or bool(parallel.get("t5_cpu"))


def needed_gb(row: ConfigRow) -> float:
    """What one GPU must hold to run `row`: the generation's peak, or loading's where that is larger (a card that
    cannot load the model cannot run it)."""
    return max(row.peak_gb or 0.0, row.load_allocated_gb or 0.0)


def analyse(records: list[dict[str, Any]], peak_override: float | None = None) -> dict[str, Any]:
    by_key: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("kind") != "mlperf":
            by_key.setdefault(record.get("config_key", ""), []).append(record)
    rows = [make_row(rs, peak_override) for rs in by_key.values()]
    add_scaling(rows)
    total = sum(r.runs_total for r in rows)
    ok = sum(r.runs_ok for r in rows)
    return {
        "rows": rows,
        "step_fits": step_fits(rows, by_key),
        "recommendations": recommendations(rows),
        "runs_total": total,
        "runs_ok": ok,
        "success_rate": ok / total if total else None,
    }
