"""The report's content: sections laid out like the hand-written seed report, every number computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wanbench.analysis.plausibility import IMPOSSIBLE_MFU, SUSPICIOUS_MFU
from wanbench.analysis.stats import CV_LIMIT, Stat
from wanbench.analysis.summary import FIT_MIN_R2, ConfigRow
from wanbench.report.document import Bullets, Document, Heading, Image, Paragraph, Table


def fmt_stat(stat: Stat | None, unit: str = "s") -> str:
    return "—" if stat is None else stat.describe(unit)


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def generation_cell(row: ConfigRow) -> str:
    if row.generation is None:
        if not row.failures:
            return "failed: no run finished"
        return f"{row.failures[0]['status']}: {row.failures[0]['error'][:120]}"
    text = fmt_stat(row.generation)
    if row.verdict in ("impossible", "suspicious"):
        text = f"{row.verdict.upper()}: {text}"
    return text


def memory_cell(row: ConfigRow) -> str:
    if row.peak_gb is None:
        return "—"
    pct = f" ({row.peak_pct:.1f}% of {row.capacity_gb:.0f} GB)" if row.peak_pct is not None else ""
    return f"{row.peak_gb:.1f} GB{pct}"


def scaling_cell(row: ConfigRow, digits: int = 2) -> tuple[str, str]:
    """(speedup, efficiency) with whatever makes them doubtful beside them."""
    if row.speedup is None:
        return ("baseline" if row.baseline_label == row.label else "—"), "—"
    doubt = f" — {'SUSPICIOUS: ' if 'superlinear' in row.scaling_problems else 'doubtful: '}" + (
        "; ".join(row.scaling_problems)) if row.scaling_problems else ""
    efficiency = f"{row.efficiency:.{max(0, digits - 2)}%} ({row.efficiency_words})"
    if row.scaling_problems:  # derived from the doubtful speedup: doubtful with it
        efficiency += f" — {'SUSPICIOUS' if 'superlinear' in row.scaling_problems else 'doubtful'}, as the speedup"
    return f"{row.speedup:.{digits}f}x{doubt}", efficiency


def step_speedup_cell(row: ConfigRow, base: ConfigRow | None) -> str:
    """The per-step speedup, doubtful where either side's step times vary past the noise limit."""
    if row.step_speedup is None:
        return "—"
    noisy = [f"step time varies (CV {stat.cv:.1%}{where})" for stat, where in
             ((row.step, ""), (base.step if base else None, " in the baseline")) if stat is not None and stat.noisy]
    return f"{row.step_speedup:.3f}x" + (f" — doubtful: {'; '.join(noisy)}" if noisy else "")


def official_cell(row: ConfigRow) -> str:
    """The speedup over the official engine, with its baseline's problems beside it."""
    if row.official_speedup is None:
        return "baseline" if row.official_label == row.label else "—"
    doubt = f" — doubtful: {'; '.join(row.official_problems)}" if row.official_problems else ""
    return f"{row.official_speedup:.2f}x{doubt}"


def units(rows: list[ConfigRow]) -> dict[str, str]:
    """What the results ran on, in the words a column or sentence needs: GPUs, or CPU processes and host memory."""
    if any(r.on_gpu for r in rows):
        return {"unit": "GPU", "units": "GPUs", "peak": "Peak memory per GPU", "memory": "GPU"}
    return {"unit": "process", "units": "processes", "peak": "Peak host memory (no GPU)", "memory": "host"}


def build_document(analysis: dict[str, Any], records: list[dict[str, Any]], plots: dict[str, Any],
                   source: str, mlperf: list[dict[str, Any]] | None = None,
                   retried: list[dict[str, Any]] | None = None, preface: str | None = None) -> Document:
    rows: list[ConfigRow] = analysis["rows"]
    doc = Document("Wan 2.2 benchmark report")
    if preface:
        doc.add(Paragraph(preface))
    rate = analysis["success_rate"]
    doc.add(Paragraph(
        f"Produced by wanbench from {source}: {analysis['runs_total']} runs of {len(rows)} "
        f"configuration{'' if len(rows) == 1 else 's'}, "
        f"{analysis['runs_ok']} ok" + (f" (success rate {rate:.0%})." if rate is not None else ".")
    ))
    u = units(rows)
    doc.add(Heading("Executive summary"))
    versus = any(r.official_speedup is not None for r in rows)
    doc.add(Table(
        ["Configuration", "Engine", "Generation time", "Model loading", "Total", u["peak"], "Speedup",
         "Parallel efficiency", *(["Speedup over official"] if versus else []), "MFU", "Runs ok", "Flags"],
        [[r.label, r.engine, generation_cell(r), fmt_stat(r.load), fmt_stat(r.total), memory_cell(r),
          *scaling_cell(r), *([official_cell(r)] if versus else []),
          fmt(r.mfu, ".0%") if r.mfu is not None else r.verdict, f"{r.runs_ok}/{r.runs_total}",
          "; ".join(r.short_flags) or "none"] for r in rows],
    ))
    if versus:
        doc.add(Paragraph(
            "Speedup over official = generation time of the fastest official-engine configuration that makes the "
            f"same video on as many {u['units']}, measured in these results, / this configuration's. The official "
            "code runs the unconditional branch at every step, also where a guidance scale of 1 lets wanbench "
            "skip it."))
    doc.add(Heading("Recommendations"))
    doc.add(Bullets(analysis["recommendations"]))
    if mlperf:
        _mlperf(doc, mlperf)
    _scaling(doc, rows, plots)
    _steps(doc, analysis, plots)
    _memory(doc, rows, plots, u)
    _energy(doc, rows, plots)
    _phases(doc, rows, plots)
    _flags(doc, rows, retried or [])
    _configuration(doc, rows)
    _environment(doc, records)
    _methodology(doc, u)
    return doc


def _mlperf(doc: Document, results: list[dict[str, Any]]) -> None:
    doc.add(Heading("MLPerf (LoadGen)"))
    on_gpu = any(r["figures"].get("gpu_seconds_per_video") is not None for r in results)
    doc.add(Paragraph("Figures parsed from LoadGen's mlperf_log_summary.txt, rates and query counts from "
                      "mlperf_log_detail.txt at full precision (performance only: accuracy needs the trained weights "
                      "and VBench). p90 latency is SingleStream's figure, with LoadGen's early-stopping estimate in "
                      "brackets where it made one; Offline's is samples per second. "
                      + ("GPU-seconds per video = GPUs / samples per second. " if on_gpu else "")
                      + "INVALID says which of LoadGen's conditions was not met: a SingleStream run shorter than "
                      "early stopping needs (64 queries or more) measures the same latency but cannot be submitted."))
    doc.add(Table(
        ["Scenario", "Configuration", "Mode", "Result", "p90 latency", "Mean latency", "Samples/s",
         *(["GPU-s per video"] if on_gpu else []), "Model loading", "LoadGen logs"],
        [_mlperf_row(r, on_gpu) for r in results],
    ))


def _mlperf_row(result: dict[str, Any], on_gpu: bool) -> list[str]:
    f = result["figures"]
    verdict = str(f.get("valid"))
    if verdict != "VALID" and f.get("invalid_because"):
        verdict += f": {f['invalid_because']}"
    single = result["scenario"] == "SingleStream"
    p90 = fmt(f.get("p90_latency_s") if single else None, ".2f", " s")
    if single and f.get("early_stopping_p90_s") is not None:
        p90 += f" ({f['early_stopping_p90_s']:.2f} s)"
    return [result["scenario"], result["label"], (result.get("settings") or {}).get("mode", "exact"), verdict, p90,
            fmt(f.get("mean_latency_s") if single else None, ".2f", " s"), fmt(f.get("samples_per_second"), ".4g"),
            *([fmt(f.get("gpu_seconds_per_video"), ".1f")] if on_gpu else []), fmt(f.get("load_s"), ".2f", " s"),
            _logs_cell(f.get("logs"))]


def _logs_cell(logs: str | None) -> str:
    """The run's LoadGen folder as it sits in the results folder: loadgen-N (mlperf) or workers/NNN-KEY.mlperf."""
    if not logs:
        return "—"
    path = Path(logs)
    return f"{path.parent.name}/{path.name}" if path.parent.name == "workers" else path.name


def _scaling(doc: Document, rows: list[ConfigRow], plots: dict[str, Any]) -> None:
    doc.add(Heading("Scaling"))
    u = units(rows)
    scaled = [r for r in rows if r.speedup is not None]
    if not scaled:
        doc.add(Paragraph(f"No configuration on several {u['units']} has a baseline on one with the same settings "
                          "in these results."))
        return
    rows_out = []
    for r in scaled:
        speed, eff = scaling_cell(r, digits=3)  # a target speedup is decided at this resolution
        base = next((b for b in rows if b.label == r.baseline_label), None)
        rows_out.append([r.label, str(r.gpus), r.baseline_label or "", speed, step_speedup_cell(r, base), eff])
    doc.add(Table(
        ["Configuration", u["units"].capitalize(), f"Baseline (1 {u['unit']})", "Speedup (generation)",
         "Speedup (per step)", "Parallel efficiency"], rows_out,
    ))
    if plots.get("speedup"):
        doc.add(Image(plots["speedup"], f"Speedup of generation time over 1 {u['unit']}, against ideal linear "
                                        "scaling"))


def _steps(doc: Document, analysis: dict[str, Any], plots: dict[str, Any]) -> None:
    doc.add(Heading("Step count"))
    fits = analysis["step_fits"]
    if not fits:
        doc.add(Paragraph("No configuration was run at two or more step counts."))
        return
    doc.add(Table(
        ["Configurations", "Fixed cost", "Per step", "R²", "Points", "Reliable"],
        [[" / ".join(f["labels"]), f"{f['fixed_s']:.2f} s", f"{f['per_step_s']:.3f} s", fmt(f["r2"], ".4f"),
          str(len(f["points"])), "UNRELIABLE: " + "; ".join(f["problems"]) if f["problems"] else "yes"]
         for f in fits],
    ))
    if any(f["problems"] for f in fits):
        doc.add(Paragraph("An unreliable fit is shown for what it is and used for nothing: its fixed and per-step "
                          "costs are not estimates of this machine's."))
    if plots.get("steps"):
        doc.add(Image(plots["steps"], "Generation time against steps, with the least-squares line"))


def _memory(doc: Document, rows: list[ConfigRow], plots: dict[str, Any], u: dict[str, str]) -> None:
    doc.add(Heading("Memory"))
    if u["memory"] == "GPU":
        doc.add(Table(
            ["Configuration", "Peak per GPU", "Average per GPU", "Capacity", "Source", "Allocated at loading",
             "Allocated in denoise", "Host peak (largest rank)"],
            [[r.label, fmt(r.peak_gb, ".1f", " GB"), fmt(r.avg_gb, ".1f", " GB"), fmt(r.capacity_gb, ".0f", " GB"),
              r.peak_source or "—", fmt(r.load_allocated_gb, ".1f", " GB"),
              fmt(r.denoise_allocated_gb, ".1f", " GB"), fmt(r.host_peak_gb, ".1f", " GB")] for r in rows],
        ))
    else:
        doc.add(Table(
            ["Configuration", "Peak host memory (worker tree)", "Average (worker tree)", "Host memory",
             "Largest single rank"],
            [[r.label, fmt(r.peak_gb, ".1f", " GB"), fmt(r.avg_gb, ".1f", " GB"), fmt(r.capacity_gb, ".0f", " GB"),
              fmt(r.host_peak_gb, ".1f", " GB")] for r in rows],
        ))
    if u["memory"] == "GPU":
        doc.add(Paragraph("Allocated: the torch allocator's peak on the busiest GPU, what the tensors needed; "
                          "NVML's figure adds the CUDA context and the allocator's cache. Host peak: the largest "
                          "resident set of any rank's process (offloaded weights live there)."))
    else:
        doc.add(Paragraph("No GPU was used: the peak is the resident host memory (RSS) of each configuration's "
                          "whole worker tree (every rank and the launcher), sampled from outside it, as in the "
                          "executive summary; the largest single rank is what one process needed."
                          + (" A dash: that run did not go through `wanbench bench`, whose runner samples the tree; "
                             "its processes recorded their own peaks." if any(r.peak_gb is None for r in rows)
                             else "")))
    if plots.get("memory"):
        doc.add(Image(plots["memory"], "Memory in use over time on the busiest GPU of each configuration"
                      if u["memory"] == "GPU" else "Host memory (RSS of the worker tree) over time"))


def _energy(doc: Document, rows: list[ConfigRow], plots: dict[str, Any]) -> None:
    doc.add(Heading("Energy and cost"))
    priced = any(r.gpu_hour_price is not None for r in rows)
    if not any(r.on_gpu for r in rows):
        doc.add(Paragraph("No GPU was used: energy is not measured on CPU-only runs (NVML counts GPU energy only)"
                          + (", and --gpu-hour-price prices GPU time, so no cost is given" if priced else "")
                          + ". What one video costs in CPU time:"))
        doc.add(Table(["Configuration", "CPU time per video"],
                      [[r.label, f"{fmt(r.cost_seconds, '.2f')} {r.cost_unit}"] for r in rows]))
        return
    doc.add(Table(
        ["Configuration", "GPU-seconds per video", "Videos per hour per GPU", "Energy per video",
         "Average power per GPU", *(["Cost per video", "Cost per 1,000 videos"] if priced else [])],
        [[r.label, fmt(r.gpu_seconds, ".1f"), fmt(r.videos_per_hour_per_gpu, ".1f"),
          _kj(r),
          fmt(r.watts_per_gpu, ".0f", " W"),
          *([fmt(r.cost_per_video, ".4f"), fmt(r.cost_per_1000_videos, ".2f")] if priced else [])]
         for r in rows if r.on_gpu],
    ))
    price = next((r.gpu_hour_price for r in rows if r.gpu_hour_price is not None), None)
    doc.add(Paragraph(
        "Energy: the difference of NVML's total-energy counter of every GPU of the run, read by each rank around "
        "the generation (text encoding, denoising, decoding; loading and compiling left out), summed over GPUs; "
        "the whole board's power, idle included. Average power per GPU = joules / (seconds x GPUs). "
        + (f"Cost at {price:g} per GPU-hour (--gpu-hour-price) = GPU-seconds / 3600 x price." if priced else
           "Give --gpu-hour-price to see the cost per video.")))
    if plots.get("energy"):
        doc.add(Image(plots["energy"], "Energy per video (median, kJ) and average power per GPU"))


def _kj(row: ConfigRow) -> str:
    e = row.energy_j
    if e is None:
        return "not measured"
    if e.n == 1:
        return f"{e.median / 1000:.1f} kJ (n=1)"
    return f"{e.median / 1000:.1f} kJ ({e.min / 1000:.1f}–{e.max / 1000:.1f}, n={e.n})"


def _phases(doc: Document, rows: list[ConfigRow], plots: dict[str, Any]) -> None:
    doc.add(Heading("Model loading and phases"))
    doc.add(Table(
        ["Configuration", "Loading", "Compile", "Text encoding", "Denoise", "Per step", "VAE decode",
         "Largest untimed (other)"],
        [[r.label, fmt_stat(r.load), fmt_stat(r.compile), fmt_stat(r.text_encode), fmt_stat(r.denoise),
          "—" if r.step is None else r.step.describe(digits=3), fmt_stat(r.vae_decode),
          fmt(r.other_max_s, ".3f", " s")] for r in rows],
    ))
    doc.add(Paragraph("Loading and compiling happen once per worker: their n counts workers, not repeats."))
    if plots.get("phases"):
        doc.add(Image(plots["phases"], "Median time per phase and configuration"))


def _flags(doc: Document, rows: list[ConfigRow], retried: list[dict[str, Any]]) -> None:
    doc.add(Heading("Flags and failures"))
    items = [f"{r.label}: {flag}" for r in rows for flag in r.flags]
    items += [f"{r.label}: {f['status']} — {f['error']}" for r in rows for f in r.failures]
    items += [f"{r.get('label', '?')}: repeat {r.get('repeat', 0) + 1} was {r.get('status', 'failed')} "
              f"({r.get('error') or 'no reason recorded'}) and ran again with --retry-failed; the first record is "
              "kept in retried.jsonl" for r in retried]
    doc.add(Bullets(items or ["None."]))


def _configuration(doc: Document, rows: list[ConfigRow]) -> None:
    doc.add(Heading("Configuration"))
    doc.add(Table(
        ["Configuration", "Engine", "Model", "Weights", "Size", "Frames", "Steps", units(rows)["units"].capitalize(),
         "Parallel", "Compile", "Prompt"],
        [[r.label, r.engine, r.config.get("model") or "—", r.config.get("weights") or "—",
          f"{r.config.get('width')}*{r.config.get('height')}", str(r.config.get("frames")),
          str(r.config.get("steps")), str(r.gpus), _parallel_text(r.config),
          "yes" if r.config.get("compile") else "no", _prompt_text(r)] for r in rows],
    ))


def _prompt_text(row: ConfigRow) -> str:
    prompt = str(row.config.get("prompt") or "—")[:80]
    return f"{row.prompts} prompts, the first: {prompt}" if row.prompts > 1 else prompt


def _parallel_text(config: dict[str, Any]) -> str:
    p = config.get("parallel", {})
    parts = [f"strategy {p.get('strategy')}"]
    parts += ["cfg-parallel"] if p.get("cfg_parallel") else []
    parts += [f"ulysses {p['ulysses']}"] if p.get("ulysses", 1) > 1 else []
    parts += [f"ring {p['ring']}"] if p.get("ring", 1) > 1 else []
    parts += [f"fsdp {','.join(p['fsdp'])}"] if p.get("fsdp") else []
    parts += [f"offload {p['offload']}"] if p.get("offload", "none") != "none" else []
    parts += [f"{p['dp']} data-parallel replicas"] if p.get("dp", 1) > 1 else []
    return ", ".join(parts)


def _environment(doc: Document, records: list[dict[str, Any]]) -> None:
    doc.add(Heading("Environment"))
    envs = {}
    for record in records:
        env = record.get("env") or {}
        if env:
            key = (env.get("hostname"), tuple(env.get("gpu_names") or ()), env.get("torch"),
                   tuple(sorted((env.get("tuning_env") or {}).items())))
            envs.setdefault(key, env)
    rows = []
    for env in envs.values():
        git = env.get("git") or {}
        rows.append([env.get("hostname", ""), ", ".join(env.get("gpu_names") or []) or "none",
                     str(env.get("gpu_count", 0)), *(str(env.get(k) or "—") for k in ("driver", "cuda", "torch",
                                                                                      "diffusers", "nccl")),
                     f"{git.get('commit') or 'unknown'}{' (dirty)' if git.get('dirty') else ''}",
                     ", ".join(f"{k}={v}" for k, v in sorted((env.get("tuning_env") or {}).items())) or "none"])
    doc.add(Table(["Host", "GPUs", "Count", "Driver", "CUDA", "torch", "diffusers", "NCCL", "wanbench revision",
                   "Tuning variables"], rows))
    engines = sorted({(record.get("env") or {}).get("engine", {}).get("version", "") for record in records} - {""})
    if engines:
        doc.add(Paragraph("Engines that ran: " + "; ".join(engines) + "."))
    notes = sorted({note for record in records for note in record.get("notes") or []
                    if note.startswith(("official engine:", "diffusers:"))})
    if notes:
        doc.add(Bullets(notes))


def _methodology(doc: Document, u: dict[str, str]) -> None:
    doc.add(Heading("Methodology"))
    gpu = u["memory"] == "GPU"
    timing = ("Phase times are wall-clock times bracketed by device synchronisation; per-step times come from CUDA "
              "events read after the loop (wanbench's engine) or from the host clock, synchronised at hooks on each "
              "step of the official and diffusers engines' own loops." if gpu else
              "No GPU was used: phase and step times are host wall-clock times, and the N-process rows are N "
              "CPU processes (gloo) with the threads per rank each run recorded.")
    memory = ("Peak memory per GPU: NVML used memory sampled by the runner (outside the worker), else the torch "
              "allocator's peak; percent of the GPU's capacity. GB are 10^9 bytes (NVML's used memory includes the "
              "CUDA context and the allocator's cache)." if gpu else
              "Peak memory: the resident host memory (RSS) of the worker tree, sampled by the runner from outside "
              "it. GB are 10^9 bytes.")
    doc.add(Bullets([
        f"Each configuration runs in a fresh worker process (torchrun for several {u['units']}): the model is "
        "loaded once and timed (model loading), warm-up runs follow and are not counted, then the counted repeats.",
        timing + " Generation time = total - loading - compile = text encoding + denoising + VAE decode + saving + "
        "untimed remainder ('other', shown, never hidden). Total = loading + compile + generation of that repeat.",
        f"Statistics: median with min–max over repeats; coefficient of variation above {CV_LIMIT:.0%} is flagged "
        "in the row itself.",
        memory,
        "FLOPs per DiT forward (L video tokens, T=512 text tokens, width d, FFN f, n blocks): "
        "n(12Ld² + 4Td² + 4Ldf) linear + n(4L²d + 4LTd) attention, plus patch/output/text projections; "
        "two forwards per guided step. MFU = denoise FLOPs / denoise time / GPUs / "
        "peak dense bf16 rate (datasheet table, or a measured peak).",
        f"Plausibility: a time implying more than {IMPOSSIBLE_MFU:.0%} of peak is IMPOSSIBLE, more than "
        f"{SUSPICIOUS_MFU:.0%} SUSPICIOUS; such a number is never shown without its flag.",
        f"Speedup = 1-{u['unit']} generation time / N-{u['unit']} generation time with otherwise identical settings; "
        "parallel efficiency = speedup / N. Only efficiency of 90% to 100% is called near-linear (75% good, 50% "
        "moderate, below that poor); above 100% is superlinear and SUSPICIOUS. A speedup over a noisy baseline, "
        "or between runs with different threads per rank, says so beside the number.",
        f"Step fit: least squares of generation time = fixed + per_step x steps over every ok run; a fit with a "
        f"cost that is not positive, an R² below {FIT_MIN_R2}, or a noisy row is marked UNRELIABLE.",
        "Recommendations compare only configurations that make the same video (model, size, frames, steps and "
        "sampling settings), and leave out any whose figures are flagged.",
    ]))
