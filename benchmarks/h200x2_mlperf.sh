#!/usr/bin/env bash
# Device call (2x H200), issue 7: MLPerf SingleStream through LoadGen on 2 GPUs (auto strategy = CFG
# parallel), reference settings (81 frames, 20 steps, guidance 4/3, seed 42, fp32 VAE).
# Usage: benchmarks/h200x2_mlperf.sh SIZE QUERIES   e.g. 480*832 3, or 1280*720 1
source benchmarks/device_preamble.sh
size=${1:-1280*720}; queries=${2:-3}; name=mlperf-ss-${size/\*/x}
python3 -m wanbench.cli mlperf --scenario SingleStream --gpus 2 --size "$size" --min-query-count "$queries" \
  --min-duration 0 --warmup-steps 2 --timeout 580 --out "/tmp/$name" 2>&1 | tee "$OUT/$name.log"
tar czf "$OUT/$name.tgz" -C /tmp "$name"
