"""Re-read LoadGen's logs in MLPerf result folders and refresh the figures stored from them.

For folders written before the parser read mlperf_log_detail.txt (the summary rounds a 70 s sample's
rate to 0.01, which overstated GPU-seconds per video). Only LoadGen-derived figures change; wanbench's
own timings (load_s, compile_s, wanbench_mean_latency_s) are kept.
Usage: python benchmarks/reparse_mlperf.py FOLDER [FOLDER ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from wanbench.mlperf.summary import loadgen_figures
from wanbench.store import ResultsStore


def reparse(folder: Path) -> dict:
    result_path = folder / "mlperf_result.json"
    result = json.loads(result_path.read_text())
    figures, parsed = loadgen_figures(folder, result["settings"]["gpus"])
    result["loadgen"], result["loadgen_summary"] = figures, parsed
    result_path.write_text(json.dumps(result, indent=2))
    with ResultsStore(folder) as store:
        for row in store.mlperf_results():
            store.update_mlperf_figures(row["result_id"], {**row["figures"], **figures})
    return figures


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(name, json.dumps(reparse(Path(name))))
