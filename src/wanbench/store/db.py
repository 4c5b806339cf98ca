"""results.db (SQLite, schema versioned) plus runs.jsonl, written one run at a time.

Each run is inserted in one transaction, then appended to runs.jsonl (flushed and fsynced), so a
crash loses at most the run in flight. Opening the store reconciles the two files by run id.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

from wanbench.errors import UserError

STORE_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    config_key TEXT NOT NULL,
    label TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    started_at REAL,
    total_s REAL,
    load_s REAL,
    denoise_s REAL,
    step_median_s REAL,
    peak_gb REAL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_config ON runs (config_key, repeat);
CREATE TABLE IF NOT EXISTS mlperf (
    result_id TEXT PRIMARY KEY,
    scenario TEXT NOT NULL,
    started_at REAL,
    label TEXT NOT NULL,
    figures TEXT NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suites (
    suite_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    summary TEXT
);
"""


RECORD_KEYS = {"run_id", "suite", "config_key", "label", "repeat"}  # what a runs.jsonl line needs to be stored


def _read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """A JSON-lines file of run records: (records, the lines that hold no run record); empty if it is absent."""
    if not path.is_file():
        return [], []
    records, broken = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("run_id"), str) and set(record) >= RECORD_KEYS:
                records.append(record)
            else:
                broken.append(line)
    return records, broken


def config_key(config: dict[str, Any]) -> str:
    """A stable id of a configuration: the hash of its canonical JSON (tag included)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _peak_gb(record: dict[str, Any]) -> float | None:
    memory = record.get("memory") or {}
    samples = memory.get("gpus") or []
    peaks = [g.get("peak_gb") for g in samples if g.get("peak_gb") is not None]
    peaks += [r.get("max_allocated_gb") for r in memory.get("ranks", []) if r.get("max_allocated_gb") is not None]
    return max(peaks) if peaks else None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class ResultsStore:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.db_path = self.folder / "results.db"
        self.jsonl_path = self.folder / "runs.jsonl"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.db_path)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"cannot open a results folder at {self.folder}: {_reason(exc)}: choose another "
                            "--out") from None
        try:
            self.conn.executescript(_SCHEMA)
            version = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is None:
                with self.conn:
                    self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(STORE_SCHEMA_VERSION),))
            elif int(version[0]) > STORE_SCHEMA_VERSION:
                raise UserError(f"{self.db_path} has schema {version[0]}, newer than this wanbench: upgrade "
                                "wanbench")
            self.reconcile()
        except (sqlite3.Error, ValueError) as exc:
            self.conn.close()
            fix = ("move it aside and wanbench rebuilds it from runs.jsonl" if self.jsonl_path.is_file() else
                   "give a folder written by 'wanbench bench' or 'wanbench mlperf'")
            raise UserError(f"{self.db_path} is not a readable wanbench results database ({_reason(exc)}): {fix}"
                            ) from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_run(self, record: dict[str, Any], suite: str, label: str, repeat: int) -> str:
        """Store one finished run (any status) in both files; returns its run id."""
        record = dict(record)
        record.setdefault("run_id", uuid.uuid4().hex)
        record["suite"], record["label"], record["repeat"] = suite, label, repeat
        record.setdefault("config_key", config_key(record.get("config", {})))
        self._insert(record)
        self._append_jsonl(record)
        return record["run_id"]

    def _insert(self, record: dict[str, Any]) -> None:
        phases = record.get("phases") or {}
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record["run_id"], record["suite"], record["config_key"], record["label"], record["repeat"],
                    record.get("status", "failed"), record.get("error"), record.get("started_at"),
                    phases.get("total_s"), phases.get("load_s"), phases.get("denoise_s"),
                    _median(phases.get("step_s") or []), _peak_gb(record),
                    json.dumps(record, ensure_ascii=False),
                ),
            )

    def _append_jsonl(self, record: dict[str, Any]) -> None:
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def reconcile(self) -> None:
        """Make results.db and runs.jsonl hold the same runs (after a crash between the two writes)."""
        stored = {row[0]: row[1] for row in self.conn.execute("SELECT run_id, record FROM runs")}
        in_db = set(stored)
        records, broken = self._read_jsonl()
        if broken:
            # A line cut by a crash mid-write, or a file damaged by hand: the lines are kept aside, never dropped
            # unseen, and the file is rewritten without them (a run whose transaction committed is re-appended
            # below from results.db).
            aside = self.jsonl_path.with_name("runs.unreadable.jsonl")
            with open(aside, "a", encoding="utf-8") as f:
                f.writelines(line if line.endswith("\n") else line + "\n" for line in broken)
            print(f"wanbench: warning: {len(broken)} unreadable line(s) of {self.jsonl_path} moved to {aside}",
                  file=sys.stderr)
            self._rewrite_jsonl(records)
        in_jsonl = {record["run_id"]: record for record in records}
        differ = 0
        for run_id, record in in_jsonl.items():
            if run_id not in in_db:
                self._insert(record)
            elif json.loads(stored[run_id]) != record:
                differ += 1
        if differ:
            print(f"wanbench: warning: {differ} run(s) in {self.jsonl_path} differ from {self.db_path}, which is "
                  "what is read; to use runs.jsonl instead, move results.db aside (it is rebuilt from runs.jsonl)",
                  file=sys.stderr)
        for run_id in sorted(in_db - set(in_jsonl)):
            self._append_jsonl(json.loads(stored[run_id]))

    def _rewrite_jsonl(self, records: list[dict[str, Any]]) -> None:
        """Replace runs.jsonl with `records`, atomically (a crash leaves the old file or the new one)."""
        tmp = self.jsonl_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        tmp.replace(self.jsonl_path)

    def _read_jsonl(self) -> tuple[list[dict[str, Any]], list[str]]:
        return _read_records(self.jsonl_path)

    def runs(self, suite: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT record FROM runs", ()
        if suite is not None:
            query, args = query + " WHERE suite=?", (suite,)
        return [json.loads(row[0]) for row in self.conn.execute(query + " ORDER BY started_at, repeat", args)]

    def done(self, key: str) -> set[int]:
        """Repeats already recorded for a configuration key."""
        return {row[0] for row in self.conn.execute("SELECT repeat FROM runs WHERE config_key=?", (key,))}

    def drop_failed(self, key: str) -> int:
        """Take a configuration's failed runs out of the store (into retried.jsonl), so that they run again."""
        rows = self.conn.execute("SELECT run_id, record FROM runs WHERE config_key=? AND status != 'ok'",
                                 (key,)).fetchall()
        if not rows:
            return 0
        dropped = {r[0] for r in rows}
        with open(self.folder / "retried.jsonl", "a", encoding="utf-8") as f:
            f.writelines(r[1] + "\n" for r in rows)
        records, _ = self._read_jsonl()
        self._rewrite_jsonl([r for r in records if r.get("run_id") not in dropped])
        with self.conn:
            self.conn.executemany("DELETE FROM runs WHERE run_id=?", [(i,) for i in dropped])
        return len(dropped)

    def retried(self) -> list[dict[str, Any]]:
        """The failed runs that --retry-failed took out of the store, oldest first (for the report's record)."""
        return _read_records(self.folder / "retried.jsonl")[0]

    def add_suite(self, suite_id: str, name: str, started_at: float, finished_at: float, summary: dict) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO suites VALUES (?,?,?,?,?)",
                (suite_id, name, started_at, finished_at, json.dumps(summary)),
            )

    def add_mlperf(self, scenario: str, label: str, figures: dict, settings: dict, started_at: float) -> str:
        result_id = uuid.uuid4().hex
        with self.conn:
            self.conn.execute("INSERT INTO mlperf VALUES (?,?,?,?,?,?)", (
                result_id, scenario, started_at, label, json.dumps(figures), json.dumps(settings)))
        return result_id

    def mlperf_results(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT result_id, scenario, started_at, label, figures, settings FROM mlperf "
                                 "ORDER BY started_at")
        return [{"result_id": r[0], "scenario": r[1], "started_at": r[2], "label": r[3],
                 "figures": json.loads(r[4]), "settings": json.loads(r[5])} for r in rows]
