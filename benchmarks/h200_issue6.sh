#!/usr/bin/env bash
# Device calls (1x H200) for issue 6 (session 3; session 5 ran them through h200x2_next.sh fa4, with
# FlashAttention 4 staged first by benchmarks/fa4_wheels.sh, which wanbench's defaults then use); each part fits
# one 10-minute call.
#   e2e:      stock WanPipeline and wanbench (its defaults: compile, attention auto), 20 steps, in one process
#   fidelity: FP8 linear and First Block Cache against the exact path (speed-up + latent error + PSNR)
source benchmarks/device_preamble.sh
case "${1:?usage: h200_issue6.sh e2e|fidelity}" in
  e2e) python3 benchmarks/speed.py --part e2e --steps 20 --repeats 1 --out "$OUT/speed-h200-1gpu-e2e.json" ;;
  fidelity) python3 benchmarks/fidelity.py --steps 10 --repeats 1 --modes fp8 fbc:0.05 --out "$OUT/fidelity-h200.json" ;;
esac 2>&1 | tee "$OUT/$1.log"
