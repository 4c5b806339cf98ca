"""The results store: results.db (SQLite) and runs.jsonl in one output folder."""

from wanbench.store.db import ResultsStore, config_key

__all__ = ["ResultsStore", "config_key"]
