"""wanbench report: results folder or results.db -> report.md, report.html, PNG plots, summary CSV/JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from wanbench.analysis.summary import analyse
from wanbench.errors import UserError
from wanbench.outputs import writable_folder
from wanbench.report import plots
from wanbench.report.content import build_document
from wanbench.report.document import to_html, to_markdown
from wanbench.store import ResultsStore


def load_records(source: str | Path) -> tuple[list[dict[str, Any]], Path]:
    path = Path(source)
    if path.is_file() and path.name not in ("results.db", "runs.jsonl"):  # the store reads only these names
        raise UserError(f"{path} is a file: give the folder written by 'wanbench bench' or 'wanbench mlperf' (it "
                        "holds results.db and runs.jsonl), or its results.db")
    folder = path.parent if path.name in ("results.db", "runs.jsonl") else path
    if not (folder / "results.db").is_file() and not (folder / "runs.jsonl").is_file():
        raise UserError(f"no results.db in {folder}: give a folder written by 'wanbench bench' or 'wanbench mlperf', "
                        "or its results.db")
    with ResultsStore(folder) as store:
        records = store.runs()
    if not records and (folder / "runs.unreadable.jsonl").is_file():
        raise UserError(f"{folder}/runs.jsonl holds no readable run (its damaged lines are in "
                        "runs.unreadable.jsonl): restore it from a copy, or run 'wanbench bench' again")
    if not records:
        raise UserError(f"{folder} holds no runs yet: run 'wanbench bench' into it first")
    return records, folder


def write_report(source: str | Path, out: str | Path | None = None, peak_tflops: float | None = None,
                 gpu_hour_price: float | None = None, preface: str | None = None) -> list[Path]:
    """The report of a results folder; `preface`, where given, is said first (e.g. that the suite was cut short)."""
    records, folder = load_records(source)
    target = writable_folder(Path(out) if out else folder / "report")
    analysis = analyse(records, peak_override=peak_tflops, gpu_hour_price=gpu_hour_price)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_key.setdefault(record.get("config_key", ""), []).append(record)
    made = {
        "speedup": plots.speedup_plot(analysis["rows"], target / "speedup.png"),
        "memory": plots.memory_plot(records, target / "memory.png"),
        "phases": plots.phase_plot(analysis["rows"], by_key, target / "phases.png"),
        "steps": plots.steps_plot(analysis["step_fits"], target / "steps.png"),
        "energy": plots.energy_plot(analysis["rows"], target / "energy.png"),
    }
    with ResultsStore(folder) as store:
        mlperf = store.mlperf_results()
        retried = store.retried()
    doc = build_document(analysis, records, made, str(folder / "results.db"), mlperf, retried, preface)
    md, page = target / "report.md", target / "report.html"
    md.write_text(to_markdown(doc, target), encoding="utf-8")
    page.write_text(to_html(doc), encoding="utf-8")
    rows = [row.to_dict() for row in analysis["rows"]]
    summary = {"runs_total": analysis["runs_total"], "runs_ok": analysis["runs_ok"],
               "success_rate": analysis["success_rate"], "recommendations": analysis["recommendations"],
               "step_fits": analysis["step_fits"], "rows": rows, "mlperf": mlperf}
    (target / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    with open(target / "summary.csv", "w", newline="", encoding="utf-8") as f:
        fields = ["label", "engine", "gpus", "gpu_name", "runs_ok", "runs_total", "generation_median_s",
                  "generation_min_s", "generation_max_s", "generation_cv", "step_median_s", "load_median_s",
                  "total_median_s", "peak_gb", "peak_pct", "speedup", "efficiency", "mfu", "verdict", "flags",
                  "gpu_seconds",
                  "videos_per_hour_per_gpu", "energy_median_j", "avg_watts_per_gpu", "cost_per_video",
                  "official_speedup"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in analysis["rows"]:
            g = row.generation
            writer.writerow({
                "label": row.label, "engine": row.engine, "official_speedup": row.official_speedup,
                "gpus": row.gpus, "gpu_name": row.gpu_name, "runs_ok": row.runs_ok,
                "runs_total": row.runs_total, "generation_median_s": g.median if g else None,
                "generation_min_s": g.min if g else None, "generation_max_s": g.max if g else None,
                "generation_cv": g.cv if g else None, "step_median_s": row.step.median if row.step else None,
                "load_median_s": row.load.median if row.load else None,
                "total_median_s": row.total.median if row.total else None, "peak_gb": row.peak_gb,
                "peak_pct": row.peak_pct, "speedup": row.speedup, "efficiency": row.efficiency, "mfu": row.mfu,
                "verdict": row.verdict, "flags": "; ".join(row.short_flags), "gpu_seconds": row.gpu_seconds,
                "videos_per_hour_per_gpu": row.videos_per_hour_per_gpu,
                "energy_median_j": row.energy_j.median if row.energy_j else None,
                "avg_watts_per_gpu": row.watts_per_gpu, "cost_per_video": row.cost_per_video,
            })
    return [md, page, target / "summary.csv", target / "summary.json", *[p for p in made.values() if p]]
