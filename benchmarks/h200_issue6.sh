#!/usr/bin/env bash
# Device calls (1x H200) left for issue 6; each part fits one 10-minute call.
#   e2e:      stock WanPipeline and wanbench --compile, 20 steps, side by side in one process
#   fidelity: FP8 linear and First Block Cache against the exact path (speed-up + latent error + PSNR)
source benchmarks/device_preamble.sh
case "${1:?usage: h200_issue6.sh e2e|fidelity}" in
  e2e) python3 benchmarks/speed.py --part e2e --steps 20 --repeats 1 --out "$OUT/speed-h200-1gpu-e2e.json" ;;
  fidelity) python3 benchmarks/fidelity.py --steps 10 --repeats 1 --modes fp8 fbc:0.05 --out "$OUT/fidelity-h200.json" ;;
esac 2>&1 | tee "$OUT/$1.log"
