"""PNG plots (matplotlib, Agg): speedup vs GPUs, memory over time, phase breakdown, time vs steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from wanbench.analysis.summary import ConfigRow


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # legends placed outside the axes stay in
    plt.close(fig)
    return path


def distinct_labels(labels: list[str]) -> dict[str, str]:
    """Each label without the ' | ' parts every label shares, so legends name what differs, uncut."""
    split = {label: label.split(" | ") for label in labels}
    common = set.intersection(*(set(parts) for parts in split.values())) if len(split) > 1 else set()
    return {label: " | ".join(p for p in parts if p not in common) or label for label, parts in split.items()}


def _styles(n: int) -> list[dict[str, Any]]:
    """n distinguishable (colour, marker, line style) combinations: tab10's colours, then other markers/dashes."""
    colours = plt.get_cmap("tab10").colors
    markers, dashes = "osD^vP*X", ["-", "--", ":", "-."]
    return [{"color": colours[i % 10], "marker": markers[(i // 10) % len(markers)],
             "linestyle": dashes[(i // 10) % len(dashes)]} for i in range(n)]


def speedup_plot(rows: list[ConfigRow], path: Path) -> Path | None:
    scaled = [r for r in rows if r.speedup is not None]
    if not scaled:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    top = max(r.gpus for r in scaled)
    ax.plot([1, top], [1, top], "k--", label="ideal (linear)")
    names = distinct_labels([r.label for r in rows])
    # A legend, not labels beside the points: configurations with the same GPU count sit on top of each other.
    for r, style in zip(scaled, _styles(len(scaled)), strict=True):
        ax.scatter([r.gpus], [r.speedup], s=40, color=style["color"], marker=style["marker"],
                   label=f"{names[r.label]} ({r.speedup:.2f}x)")
    unit, units = ("GPU", "GPUs") if any(r.on_gpu for r in rows) else ("CPU process", "CPU processes")
    ax.set_xlabel(units)
    ax.set_ylabel(f"speedup of generation time over 1 {unit}")
    ax.set_title(f"Speedup vs {units}")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def _busiest_gpu(memory: dict[str, Any]) -> dict[str, Any] | None:
    sampled = [g for g in memory.get("gpus", []) if (g.get("samples") or {}).get("t")]
    return max(sampled, key=lambda g: max(g["samples"]["used_gb"])) if sampled else None


def memory_plot(records: list[dict[str, Any]], path: Path) -> Path | None:
    """One line per configuration: its busiest GPU (the per-GPU peaks are in the memory table), or its worker tree's
    host memory where no GPU was used. A run with one sample is a point; the axis starts at 0 and shows each card's
    capacity, so that a peak reads against what the card holds."""
    series = []
    capacities: set[float] = set()
    seen = set()
    names = distinct_labels(sorted({str(r.get("label", r.get("config_key"))) for r in records}))
    for record in records:
        key = record.get("config_key")
        if key in seen or record.get("status") != "ok":
            continue
        seen.add(key)
        memory = record.get("memory") or {}
        name = names[str(record.get("label", key))]
        gpu = _busiest_gpu(memory)
        if gpu is not None:
            count = len(memory.get("gpus", []))
            where = f"GPU {gpu['index']}" if count == 1 else f"busiest of {count} GPUs"
            series.append((f"{name} ({where})", gpu["samples"]["t"], gpu["samples"]["used_gb"]))
            if gpu.get("capacity_gb"):
                capacities.add(round(gpu["capacity_gb"], 1))
        elif not memory.get("gpus"):
            samples = (memory.get("host_rss") or {}).get("samples") or {}
            if samples.get("t"):
                series.append((f"{name} (host RSS)", samples["t"], samples["rss_gb"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (name, t, values), style in zip(series, _styles(len(series)), strict=True):
        ax.plot(t, values, label=name, linewidth=1, color=style["color"], linestyle=style["linestyle"],
                marker=style["marker"] if len(t) == 1 else None, markersize=5)
    for capacity in sorted(capacities):
        ax.axhline(capacity, color="0.4", linestyle=":", linewidth=1)
        ax.annotate(f"capacity {capacity:g} GB", (0, capacity), xycoords=("axes fraction", "data"),
                    xytext=(2, 2), textcoords="offset points", fontsize=7, color="0.3")
    ax.set_ylim(bottom=0, top=max([*capacities, *(v for _, _, vs in series for v in vs)]) * 1.08)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("GPU memory in use (GB)" if capacities or any("GPU" in n for n, _, _ in series) else
                  "host memory in use, RSS (GB)")
    ax.set_title("Memory over time (one run per configuration)")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


PHASE_NAMES = ("load_s", "compile_s", "text_encode_s", "denoise_s", "vae_decode_s", "save_s", "other_s")


def phase_plot(rows: list[ConfigRow], records: dict[str, list[dict[str, Any]]], path: Path) -> Path | None:
    ok_rows = [r for r in rows if r.runs_ok]
    if not ok_rows:
        return None
    import statistics

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(ok_rows) + 1.8))
    lefts = [0.0] * len(ok_rows)
    for phase in PHASE_NAMES:
        values = []
        for r in ok_rows:
            vals = [x["phases"].get(phase, 0.0) for x in records[r.key] if x.get("status") == "ok"]
            values.append(max(0.0, statistics.median(vals)) if vals else 0.0)
        ax.barh(range(len(ok_rows)), values, left=lefts, label=phase.removesuffix("_s"))
        lefts = [a + b for a, b in zip(lefts, values, strict=True)]
    names = distinct_labels([r.label for r in ok_rows])
    ax.set_yticks(range(len(ok_rows)), [names[r.label] for r in ok_rows], fontsize=7)
    ax.set_xlabel("seconds (median over repeats)")
    ax.set_title("Where the time goes")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def steps_plot(fits: list[dict[str, Any]], path: Path) -> Path | None:
    if not fits:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    # a fit's configurations differ only in their steps: it is named by what is left of their label
    names = [" | ".join(p for p in fit["labels"][0].split(" | ") if not p.endswith(" steps")) for fit in fits]
    short = distinct_labels(names)
    for fit, name, style in zip(fits, names, _styles(len(fits)), strict=True):
        xs = [p[0] for p in fit["points"]]
        ax.scatter(xs, [p[1] for p in fit["points"]], s=20, color=style["color"], marker=style["marker"])
        grid = [min(xs), max(xs)]
        words = "UNRELIABLE fit" if fit.get("problems") else "fit"
        ax.plot(grid, [fit["fixed_s"] + fit["per_step_s"] * x for x in grid], color=style["color"],
                linestyle=":" if fit.get("problems") else "-",
                label=f"{short[name]}: {words} {fit['fixed_s']:.2f} s + {fit['per_step_s']:.3f} s x steps")
    ax.set_xlabel("denoising steps")
    ax.set_ylabel("generation time (s)")
    ax.set_title("Time vs steps with the linear fit")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def energy_plot(rows: list[ConfigRow], path: Path) -> Path | None:
    """Energy per video as bars, with each configuration's average power per GPU written beside its bar."""
    measured = [r for r in rows if r.energy_j is not None]
    if not measured:
        return None
    names = distinct_labels([r.label for r in measured])
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(measured) + 1.8))
    ys = range(len(measured))
    kj = [r.energy_j.median / 1000 for r in measured]
    ax.barh(list(ys), kj, color=plt.get_cmap("tab10").colors[2])
    for y, r, value in zip(ys, measured, kj, strict=True):
        watts = f"  {r.watts_per_gpu:.0f} W per GPU" if r.watts_per_gpu else ""
        ax.text(value, y, f" {value:.1f} kJ{watts}", va="center", fontsize=7)
    ax.set_yticks(list(ys), [names[r.label] for r in measured], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(kj) * 1.45)
    ax.set_xlabel("energy per video (kJ, all GPUs of the run)")
    ax.set_title("Energy of the generation (NVML counter)")
    return _save(fig, path)
