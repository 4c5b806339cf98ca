#!/usr/bin/env bash
# Device calls (2x H200) planned for the next session, as one background job that outlives a 10-minute call:
#   1. the second follow-ups suite (Ulysses head chunks, balanced VAE pipeline, compile under Ulysses);
#   2. issue 6: one expert's forward, stock against wanbench, incl. the heads-first attention candidate (GPU 0);
#   3. issue 7: MLPerf SingleStream at 1280*720 on 2 GPUs, 3 queries (about 14 minutes).
#   bash benchmarks/h200x2_next.sh start; then bash benchmarks/h200x2_next.sh wait (repeat until "done")
source benchmarks/device_preamble.sh
case "${1:?start|wait}" in
  start)
    bash benchmarks/device_background.sh start next \
      'python3 -m wanbench.cli bench benchmarks/suites/followups2-2gpu.toml --out $BG_DIR/followups2-2gpu --no-report;
       python3 benchmarks/speed.py --part forward --repeats 3 --out $BG_DIR/speed-h200-1gpu-forward.json;
       python3 -m wanbench.cli mlperf --scenario SingleStream --gpus 2 --size 1280*720 --min-query-count 3 \
         --min-duration 0 --warmup-steps 2 --timeout 1500 --out $BG_DIR/mlperf-ss-1280x720-3q'
    bash benchmarks/device_background.sh wait next 540 ;;
  wait)
    bash benchmarks/device_background.sh wait next "${2:-560}" ;;
esac
