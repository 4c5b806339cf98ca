#!/usr/bin/env bash
# Device call (2x H200), issue 3: every 2-GPU strategy next to one GPU in one bench run.
# Run from the repo root with .whl and .wanbench-revision carried. Brings back one tarball of the
# results folder (results.db, runs.jsonl, worker logs); the report is made from it afterwards.
source benchmarks/device_preamble.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpus.csv"
python3 -m wanbench.cli bench benchmarks/suites/strategies-2gpu.toml --out /tmp/strategies-2gpu --no-report \
  2>&1 | tee "$OUT/bench.log"
tar czf "$OUT/strategies-2gpu.tgz" -C /tmp strategies-2gpu
