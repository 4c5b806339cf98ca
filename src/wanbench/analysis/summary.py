"""From run records to per-configuration rows, scaling, step fits and recommendations (no I/O).

Every number in a report is computed here from stored run records; the report only formats.
Definitions:
  generation_s = total_s - load_s - compile_s (text encode + denoise + decode + save + other)
  speedup      = generation_s median of the 1-GPU row / this row's, for the same settings
  efficiency   = speedup / GPUs
  MFU          = analytic denoise FLOPs / denoise_s median / GPUs / peak dense bf16 rate
A derived figure that cannot be right (superlinear efficiency, a speedup over a noisy baseline, a step fit
with a negative cost or a poor R²) carries its problems with it, so the report shows them beside it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from wanbench.analysis.flops import run_flops
from wanbench.analysis.peaks import peak_tflops
from wanbench.analysis.plausibility import judge
from wanbench.analysis.scaling import StepFit, describe_efficiency, efficiency, fit_steps, speedup
from wanbench.analysis.stats import Stat, summarize
from wanbench.config import RunConfig
from wanbench.presets import get_preset

OTHER_LIMIT_FRACTION = 0.05
OTHER_LIMIT_S = 0.5
FIT_MIN_R2 = 0.9
# Card classes by the size they are sold as, with the total NVML reports for them in GB of 10^9 bytes,
# the unit of every memory figure here (an H200 sold as "141 GB" reports 143,771 MiB = 150.8 GB).
MEMORY_TIERS_GB = (("24 GB card (RTX 4090)", 25.8), ("32 GB card (RTX 5090)", 34.2), ("48 GB card (L40S)", 48.3),
                   ("80 GB card (H100)", 85.5), ("141 GB card (H200)", 150.8))
# Settings that decide which video comes out; the rest (parallel layout, compile, attention kernel, device) only
# decide how fast. Recommendations compare configurations that make the same video.
VIDEO_KEYS = ("model", "weights", "width", "height", "frames", "steps", "seed", "prompt", "negative_prompt",
              "guidance_high", "guidance_low", "shift", "boundary", "dtype", "vae_dtype", "cache", "fp8")


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
    threads: int | None = None  # CPU threads per rank, as the run recorded them
    oversubscribed: str | None = None  # CPU runs with more threads in all than the machine has CPUs
    text_encode: Stat | None = None
    vae_decode: Stat | None = None
    # the generation's energy per video over every GPU of the run, and the average power per GPU (NVML's counter)
    energy_j: Stat | None = None
    watts_per_gpu: float | None = None
    gpu_hour_price: float | None = None  # currency per GPU-hour, where the user gave one
    prompts: int = 1  # distinct prompts among the runs (MLPerf's samples each carry their own)
    # what is wrong with the speedup and efficiency figures, shown beside them
    scaling_problems: list[str] = field(default_factory=list)
    # generation-time speedup over the fastest official-engine row that makes the same video on as many GPUs, and
    # that row's label (a baseline row carries its own label and no speedup)
    official_speedup: float | None = None
    official_label: str | None = None
    official_problems: list[str] = field(default_factory=list)

    @property
    def engine(self) -> str:
        return str(self.config.get("engine") or "wanbench")

    @property
    def on_gpu(self) -> bool:
        return self.gpu_name is not None

    @property
    def trusted(self) -> bool:
        """Whether the row may be recommended: it ran, and carries no flag (the executive summary's Flags cell)."""
        return self.generation is not None and not self.short_flags

    @property
    def short_flags(self) -> list[str]:
        """The row's problems in a few words each, for the executive summary's row."""
        out = []
        if self.verdict in ("impossible", "suspicious"):
            out.append(self.verdict.upper())
        if self.generation is not None and self.generation.noisy:
            out.append(f"noisy (CV {self.generation.cv:.1%})")
        if self.generation is not None and self.generation.n == 1:
            out.append("one run: no spread")
        if self.step is not None and self.step.noisy:
            out.append(f"step time varies (CV {self.step.cv:.1%})")
        if any(f.startswith("untimed time") for f in self.flags):
            out.append("untimed time")
        out += [p for p in ([self.oversubscribed] if self.oversubscribed else []) + self.scaling_problems
                if p not in out]
        if self.runs_ok < self.runs_total:
            out.append(f"{self.runs_total - self.runs_ok} run(s) failed")
        return out

    @property
    def peak_pct(self) -> float | None:
        if self.peak_gb is None or not self.capacity_gb:
            return None
        return 100 * self.peak_gb / self.capacity_gb

    @property
    def replicas(self) -> int:
        """Data-parallel replicas (MLPerf Offline --dp): each makes its own videos on gpus/replicas GPUs."""
        return max(1, int(self.config.get("parallel", {}).get("dp", 1)))

    @property
    def gpus_per_video(self) -> int:
        return max(1, self.gpus // self.replicas)

    @property
    def gpu_seconds(self) -> float | None:
        return self.cost_seconds if self.on_gpu else None

    @property
    def videos_per_hour_per_gpu(self) -> float | None:
        return 3600.0 / self.gpu_seconds if self.gpu_seconds else None

    @property
    def cost_per_video(self) -> float | None:
        """GPU-seconds per video at the given price per GPU-hour (GPU runs only)."""
        if self.gpu_hour_price is None or not self.on_gpu or not self.gpu_seconds:
            return None
        return self.gpu_seconds / 3600.0 * self.gpu_hour_price

    @property
    def cost_per_1000_videos(self) -> float | None:
        return 1000 * self.cost_per_video if self.cost_per_video is not None else None

    @property
    def cost_seconds(self) -> float | None:
        """What one video costs in device time: GPU-seconds, or on CPU core-seconds (processes x threads x
        seconds) where the threads per rank are known, else process-seconds."""
        if not self.generation:
            return None
        seconds = self.generation.median * self.gpus_per_video
        return seconds if self.on_gpu else seconds * (self.threads or 1)

    @property
    def cost_unit(self) -> str:
        if self.on_gpu:
            return "GPU-seconds"
        if self.threads:
            return "CPU core-seconds (processes x threads x seconds)"
        return "CPU process-seconds (threads per rank not fixed: set --threads to count cores)"

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("config",)}
        for name in ("generation", "denoise", "step", "load", "compile", "total", "text_encode", "vae_decode",
                     "energy_j"):
            stat = getattr(self, name)
            out[name] = stat.to_dict() if stat else None
        out["peak_pct"] = self.peak_pct
        out["replicas"], out["gpus_per_video"] = self.replicas, self.gpus_per_video
        out["gpu_seconds"] = self.gpu_seconds
        out["videos_per_hour_per_gpu"] = self.videos_per_hour_per_gpu
        out["cost_per_video"] = self.cost_per_video
        out["cost_per_1000_videos"] = self.cost_per_1000_videos
        out["short_flags"] = self.short_flags
        out["engine"] = self.engine
        out["settings"] = settings_of(self.config)
        return out


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    p = config.get("parallel", {})
    return {"model": config.get("model"), "size": f"{config.get('width')}*{config.get('height')}",
            "frames": config.get("frames"), "steps": config.get("steps"), "gpus": p.get("gpus", 1),
            "strategy": p.get("strategy"), "cfg_parallel": p.get("cfg_parallel"), "ulysses": p.get("ulysses"),
            "ring": p.get("ring"), "fsdp": p.get("fsdp"), "offload": p.get("offload"),
            "compile": config.get("compile"), "weights": config.get("weights"),
            "engine": config.get("engine", "wanbench")}


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
        # the tree holds every rank: never below a rank's own peak, which the sampler's polling can miss
        peak = max(max(peaks), _host_peak(records) or 0.0)
        capacity = next(((r.get("env") or {}).get("host_memory_gb") for r in records
                         if (r.get("env") or {}).get("host_memory_gb")), None)
        return peak, "host RSS of the worker tree (no GPU)", sum(avg) / len(avg) if avg else None, capacity
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


def _per_session(records: list[dict[str, Any]], phase: str) -> list[float]:
    """A phase that happens once per worker (loading, compiling): every repeat of one worker carries the same
    figure, so each distinct figure counts once."""
    return list(dict.fromkeys(r["phases"].get(phase, 0.0) for r in records))


def _energies(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["energy"] for r in records if (r.get("energy") or {}).get("measured")]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def make_row(records: list[dict[str, Any]], peak_override: float | None = None,
             gpu_hour_price: float | None = None) -> ConfigRow:
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
        load=summarize(_per_session(ok, "load_s")),
        compile=summarize([s for s in _per_session(ok, "compile_s") if s]),
        total=summarize([r["phases"]["total_s"] for r in ok]),
        text_encode=summarize([r["phases"].get("text_encode_s", 0.0) for r in ok]),
        vae_decode=summarize([r["phases"].get("vae_decode_s", 0.0) for r in ok]),
        other_max_s=max((abs(r["phases"].get("other_s", 0.0)) for r in ok), default=None),
        peak_gb=peak_gb, peak_source=source, avg_gb=avg_gb, capacity_gb=capacity,
        mfu=None, implied_tflops_per_gpu=None, verdict="unknown",
        run_ids=[r.get("run_id", "") for r in records],
        load_allocated_gb=_allocated(ok, "load"), denoise_allocated_gb=_allocated(ok, "denoise"),
        host_peak_gb=_host_peak(ok), threads=(env or {}).get("torch_threads"),
        energy_j=summarize([e["joules"] for e in _energies(ok)]),
        watts_per_gpu=_median([e["avg_watts_per_gpu"] for e in _energies(ok) if e.get("avg_watts_per_gpu")]),
        gpu_hour_price=gpu_hour_price, prompts=len({r["config"].get("prompt") for r in records}),
    )
    cpus = (env or {}).get("cpu_count")
    if not row.on_gpu and row.threads and cpus and row.gpus * row.threads > cpus:
        row.oversubscribed = f"oversubscribed ({row.gpus} processes x {row.threads} threads on {cpus} CPUs)"
    _judge(row, config, guided_steps(ok[0]) if ok else None, peak_override)
    _flag(row, ok)
    return row


def guided_steps(record: dict[str, Any]) -> int | None:
    """Steps that ran both guidance branches, as the run recorded them (None for records that do not say)."""
    steps = record.get("steps") or []
    return sum(bool(s["guided"]) for s in steps) if steps and all("guided" in s for s in steps) else None


def _judge(row: ConfigRow, config: dict[str, Any], guided: int | None, peak_override: float | None = None) -> None:
    if row.denoise is None:
        return
    preset = get_preset(config["model"])
    flops = run_flops(preset, config["width"], config["height"], config["frames"], config["steps"],
                      config.get("guidance_high", 4.0) != 1.0, guided)
    peak = peak_override or peak_tflops(row.gpu_name or "")
    verdict = judge(flops.denoise, row.denoise.median, row.gpus_per_video, peak)
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
    if row.oversubscribed:
        row.flags.append(f"{row.oversubscribed}: its processes wait for each other's threads, so its time says "
                         "little of the work; set --threads so that processes x threads fit the CPUs")


def comparable_key(config: dict[str, Any]) -> tuple:
    """Settings that must match for a scaling comparison: all but the parallel layout and labels."""
    skip = {"parallel", "output", "tag", "device"}
    return tuple(sorted((k, str(v)) for k, v in config.items() if k not in skip))


def video_key(config: dict[str, Any]) -> tuple:
    """The settings that decide which video a configuration makes (VIDEO_KEYS)."""
    return tuple((k, str(config.get(k))) for k in VIDEO_KEYS)


def add_scaling(rows: list[ConfigRow]) -> None:
    singles = {}
    for row in rows:
        p = row.config.get("parallel", {})
        if row.gpus == 1 and p.get("offload", "none") == "none" and row.generation:
            singles.setdefault(comparable_key(row.config), row)
    for row in rows:
        base = singles.get(comparable_key(row.config))
        if base is None or row.generation is None or base is row or row.replicas > 1:
            continue  # data-parallel replicas make more videos, not one faster: their gain is throughput
        row.speedup = speedup(base.generation.median, row.generation.median)
        if base.step and row.step:
            row.step_speedup = speedup(base.step.median, row.step.median)
        row.efficiency = efficiency(row.speedup, row.gpus)
        row.efficiency_words = (describe_efficiency(row.efficiency) if row.speedup >= 1 else
                                f"slower than on 1 {'GPU' if row.on_gpu else 'process'}")
        row.baseline_label = base.baseline_label = base.label  # the baseline names itself: the report marks it so
        row.scaling_problems = scaling_problems(base, row)
        if row.efficiency > 1.0:
            row.flags.append(f"suspicious: parallel efficiency {row.efficiency:.0%} on {row.gpus} is above 100% "
                             "(superlinear): more likely a noisy or slow baseline, or runs that differ in more "
                             "than their GPU count, than a real gain")


def add_official_speedups(rows: list[ConfigRow]) -> None:
    """Each other engine's speedup over the official code, run in the same results: against the fastest official
    row that makes the same video (VIDEO_KEYS) on as many GPUs, with what makes the figure doubtful."""
    official: dict[tuple, ConfigRow] = {}
    for row in rows:
        if row.engine == "official" and row.generation:
            key = (video_key(row.config), row.gpus)
            if key not in official or row.generation.median < official[key].generation.median:
                official[key] = row
    for row in rows:
        base = official.get((video_key(row.config), row.gpus))
        if row.engine == "official" or base is None or row.generation is None:
            continue
        row.official_speedup = speedup(base.generation.median, row.generation.median)
        row.official_label = base.label
        base.official_label = base.label  # the baseline names itself: the report marks it so
        row.official_problems = [p for p in scaling_problems(base, row) if p != "superlinear"]


def scaling_problems(base: ConfigRow, row: ConfigRow) -> list[str]:
    """Why a speedup of `row` over `base` may not be what it seems (empty when it is sound)."""
    out = []
    if row.efficiency is not None and row.efficiency > 1.0:
        out.append("superlinear")
    if base.generation is not None and base.generation.noisy:
        out.append(f"baseline noisy (CV {base.generation.cv:.1%})")
    if row is not base and row.generation is not None and row.generation.noisy:
        out.append(f"noisy (CV {row.generation.cv:.1%})")
    if base.threads is not None and row.threads is not None and base.threads != row.threads:
        out.append(f"threads per rank differ ({base.threads} in the baseline, {row.threads} here)")
    if base.runs_ok < base.runs_total:
        out.append("baseline had failed runs")
    if row.oversubscribed or base.oversubscribed:
        out.append("CPUs oversubscribed" + (" in the baseline" if base.oversubscribed and not row.oversubscribed
                                             else ""))
    return out


def step_fits(rows: list[ConfigRow], records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """time = fixed + per_step x steps, per group of rows that differ only in steps (all ok runs as points);
    each fit lists its problems (a negative cost, a poor R², a noisy row), empty when it is reliable."""
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
                         "per_step_s": fit.per_step_s, "r2": fit.r2, "points": points,
                         "problems": fit_problems(fit, members)})
    return fits


FIT_STEP_TOLERANCE = 0.2  # a fitted per-step cost this far (fraction) from the timed steps is not one


def fit_problems(fit: StepFit, members: list[ConfigRow]) -> list[str]:
    out = []
    if fit.per_step_s <= 0:
        out.append("per-step cost not positive")
    if fit.fixed_s < 0:
        out.append("negative fixed cost")
    if fit.r2 is None:
        out.append("R² unknown (one run per step count)")
    elif fit.r2 < FIT_MIN_R2:
        out.append(f"R² {fit.r2:.2f} below {FIT_MIN_R2}")
    out += [f"built on a noisy row (CV {m.generation.cv:.1%})" for m in members
            if m.generation is not None and m.generation.noisy][:1]
    measured = [m.step.median for m in members if m.step is not None]
    if measured and fit.per_step_s > 0:
        step = statistics.median(measured)
        if abs(fit.per_step_s - step) > FIT_STEP_TOLERANCE * step:
            # the rows differ in more than their steps (a phase that changed between them), so the slope is not
            # the cost of a step
            out.append(f"per-step cost {fit.per_step_s:.3f} s against {step:.3f} s measured per step")
    return out


def recommendations(rows: list[ConfigRow]) -> list[str]:
    """Per video (same model, size, frames, steps, sampling): the fastest, the cheapest and the fastest per card
    size, among configurations whose figures can be trusted; the others are named as left out."""
    done = [r for r in rows if r.generation is not None]
    if not done:
        return ["No configuration completed: nothing to recommend."]
    videos: dict[tuple, list[ConfigRow]] = {}
    for row in done:
        videos.setdefault(video_key(row.config), []).append(row)
    out = []
    for members in videos.values():
        c = members[0].config
        video = f"{c.get('model')} {c.get('width')}*{c.get('height')}x{c.get('frames')}, {c.get('steps')} steps"
        trusted = [r for r in members if r.trusted]
        left_out = [r for r in members if not r.trusted]
        flagged = "; ".join(f"{r.label} ({', '.join(r.short_flags)})" for r in left_out)
        if len(trusted) < 2:
            alone = (f"only {trusted[0].label} has trusted figures ({trusted[0].generation.median:.2f} s per video)"
                     if trusted else "no configuration has trusted figures")
            out.append(f"{video}: no recommendation: {alone}" + (f"; flagged: {flagged}" if flagged else "")
                       + ". Re-run the flagged ones (more --repeats, an idle machine) to compare them.")
            continue
        if left_out:
            out.append(f"{video}: left out, since their figures are flagged: {flagged}.")
        out += _recommend(video, trusted)
    return out


def _ahead(best: ConfigRow, rows: list[ConfigRow], value) -> str:
    """', 1.32x ahead of NEXT': the margin over the runner-up, so a reader sees how much the choice matters."""
    others = [r for r in rows if r is not best]
    runner = min(others, key=value)
    return f", {value(runner) / value(best):.2f}x ahead of {runner.label}" if value(best) > 0 else ""


def _threads_caveat(rows: list[ConfigRow]) -> str:
    threads = sorted({r.threads for r in rows if not r.on_gpu}, key=lambda t: (t is None, t or 0))
    if len(threads) < 2:
        return ""
    shown = ", ".join("torch's default" if t is None else str(t) for t in threads)
    return f" (threads per rank differ between these rows: {shown}; on CPU they decide the order)"


def _recommend(video: str, rows: list[ConfigRow]) -> list[str]:
    out = []
    caveat = _threads_caveat(rows)
    fastest = min(rows, key=lambda r: r.generation.median)
    cheapest = min(rows, key=lambda r: r.cost_seconds)
    cost = f"{cheapest.cost_seconds:.1f} {cheapest.cost_unit} per video"
    if cheapest is fastest:
        out.append(f"{video}: fastest and cheapest {fastest.label}: {fastest.generation.median:.2f} s and {cost}"
                   f"{_ahead(fastest, rows, lambda r: r.generation.median)}{caveat}.")
    else:
        out.append(f"{video}: fastest {fastest.label}: {fastest.generation.median:.2f} s per video"
                   f"{_ahead(fastest, rows, lambda r: r.generation.median)}{caveat}.")
        out.append(f"{video}: cheapest {cheapest.label}: {cost}"
                   f"{_ahead(cheapest, rows, lambda r: r.cost_seconds)}.")
    sized = [r for r in rows if r.on_gpu and r.peak_gb is not None and not (r.peak_source or "").startswith("host")]
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
            out.append(f"{video}: fastest on a {card}: {best.label}: {best.generation.median:.2f} s per video, "
                       f"peak {best.peak_gb:.1f} GB per GPU{loading}{host}.")
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


def normalised_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config with every current field (defaults for those its wanbench did not have yet), so that
    records of older and newer versions compare setting by setting."""
    try:
        return RunConfig.from_dict(config).to_dict()
    except (TypeError, ValueError):
        return config


def analyse(records: list[dict[str, Any]], peak_override: float | None = None,
            gpu_hour_price: float | None = None) -> dict[str, Any]:
    by_key: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("kind") != "mlperf":
            record = {**record, "config": normalised_config(record.get("config") or {})}
            by_key.setdefault(record.get("config_key", ""), []).append(record)
    rows = [make_row(rs, peak_override, gpu_hour_price) for rs in by_key.values()]
    add_scaling(rows)
    add_official_speedups(rows)
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
