#!/usr/bin/env bash
# Device calls (8x H200), issue 9, as one background job that outlives a 10-minute call, most wanted first:
#   1. `wanbench bench --preset seed` (the seed report's matrix: steps 10 and 20, 1 GPU and 8 GPUs; one counted
#      run per configuration so that everything fits one session's device time);
#   2. `wanbench mlperf --scenario SingleStream` at 1280*720 on 8 GPUs, compiled (the default on CUDA; auto = CFG 2 x
#      Ulysses 4), again with `--no-compile` if that run fails;
#   3. `wanbench bench --preset scaling` up to 8 GPUs.
#   bash benchmarks/h200x8.sh start; then bash benchmarks/h200x8.sh wait (repeat until "done")
# FlashAttention 4 (the default self-attention kernel where installed) needs two calls first on the fresh machine:
# `bash benchmarks/fa4_wheels.sh stage` carrying .fa4a, then `... install` carrying .fa4b (benchmarks/fa4_wheels.sh).
source benchmarks/device_preamble.sh
case "${1:?start|wait}" in
  start)
    bash benchmarks/device_background.sh start x8 \
      'python3 -m wanbench.cli bench --preset seed --repeats 1 --cooldown 5 --out $BG_DIR/seed-8gpu --no-report;
       mlperf="python3 -m wanbench.cli mlperf --scenario SingleStream --gpus 8 --size 1280*720 --min-query-count 3
         --min-duration 0 --warmup-steps 2 --timeout 1200";
       $mlperf --out $BG_DIR/mlperf-ss-1280x720-8gpu || $mlperf --no-compile --out $BG_DIR/mlperf-ss-1280x720-8gpu-eager;
       python3 -m wanbench.cli bench --preset scaling --repeats 1 --cooldown 5 --out $BG_DIR/scaling-8gpu --no-report'
    bash benchmarks/device_background.sh wait x8 520 ;;
  wait)
    bash benchmarks/device_background.sh wait x8 "${2:-560}" ;;
esac
