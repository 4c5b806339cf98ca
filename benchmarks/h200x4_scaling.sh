#!/usr/bin/env bash
# Device calls (4x H200), issue 8, as background jobs that outlive one 10-minute call:
#   start: job "scaling" = `wanbench bench --preset scaling` (1, 2, 4 GPUs: CFG, Ulysses, CFG x Ulysses,
#          Ulysses + FSDP; 20 steps; one counted run per configuration, each timed per step), then
#          `wanbench mlperf --scenario SingleStream` at 1280*720 on 4 GPUs (auto = the fastest strategy);
#          job "followups" on GPUs 2,3 while the scaling suite runs its 1- and 2-GPU configurations on 0,1
#          (4 configurations of about a minute each, done long before the 4-GPU ones need GPUs 2,3;
#          the runner also waits for clean GPUs before each configuration).
#   wait:  bash benchmarks/h200x4_scaling.sh wait   (repeat until "done"; tarballs come back in $OUT)
# FlashAttention 4 (the default self-attention kernel where installed) needs two calls first on the fresh machine:
# `bash benchmarks/fa4_wheels.sh stage` carrying .fa4a, then `... install` carrying .fa4b (benchmarks/fa4_wheels.sh).
source benchmarks/device_preamble.sh
case "${1:?start|wait}" in
  start)
    bash benchmarks/device_background.sh start scaling \
      'python3 -m wanbench.cli bench --preset scaling --repeats 1 --cooldown 5 --out $BG_DIR/scaling-4gpu --no-report;
       python3 -m wanbench.cli mlperf --scenario SingleStream --gpus 4 --size 1280*720 --min-query-count 3 \
         --min-duration 0 --warmup-steps 2 --timeout 1500 --out $BG_DIR/mlperf-ss-1280x720-4gpu'
    sleep 20
    bash benchmarks/device_background.sh start followups \
      'CUDA_VISIBLE_DEVICES=2,3 python3 -m wanbench.cli bench benchmarks/suites/followups-2gpu.toml \
         --out $BG_DIR/followups-2gpu --no-report'
    bash benchmarks/device_background.sh wait scaling 530 ;;
  wait)
    [ -d /tmp/bg/followups ] && tar czf "$OUT/followups.tgz" -C /tmp/bg followups
    bash benchmarks/device_background.sh wait scaling "${2:-560}" ;;
esac
