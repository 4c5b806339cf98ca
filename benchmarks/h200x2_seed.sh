#!/usr/bin/env bash
# Device call (2x H200), issue 4: the seed report's matrix (a14b 480*832 81 frames, steps 10 and 20,
# 1 and 2 GPUs). One counted run per configuration (plus a 2-step warm-up) so the suite fits the
# device's 10-minute call limit; each run still times all its steps.
source benchmarks/device_preamble.sh
python3 -m wanbench.cli bench --preset seed --repeats 1 --cooldown 5 --timeout 300 --out /tmp/seed-2gpu --no-report \
  2>&1 | tee "$OUT/bench.log"
tar czf "$OUT/seed-2gpu.tgz" -C /tmp seed-2gpu
