"""Placeholder until the full report lands: a plain summary file."""

from __future__ import annotations

from pathlib import Path

from wanbench.store import ResultsStore


def write_report(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    with ResultsStore(folder) as store:
        runs = store.runs()
    lines = [f"{r['label']} repeat {r['repeat']}: {r['status']} total {r['phases'].get('total_s')}" for r in runs]
    path = folder / "summary.txt"
    path.write_text("\n".join(lines) + "\n")
    return [path]
