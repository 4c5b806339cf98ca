#!/usr/bin/env bash
# Device calls on 2x H200, each part one background job that outlives a 10-minute call (`wait` again until
# "done"). decide and mlperf ran in session 4 (results/h200x2/followups2-2gpu, mlperf-ss-1280x720-3q; the
# mlperf part pins --no-compile --no-vae-pipeline, the defaults of that run); fa4 ran in session 5
# (results/h200x2/fa4-session5, results/speed/); ring is fa4's second half alone (never run as such):
#   bash benchmarks/h200x2_next.sh start decide   # ~16 min: follow-ups suite 2 (Ulysses head chunks, balanced
#                                                 # VAE pipeline, compile under Ulysses), then issue 6's forward
#                                                 # timings (then with a heads-first candidate, since removed)
#   bash benchmarks/h200x2_next.sh start mlperf   # ~14 min: issue 7, SingleStream 1280*720 on 2 GPUs, 3 queries
#   bash benchmarks/h200x2_next.sh start ring     # ~10 min: follow-ups suite 3 (Ulysses head-block exchange
#                                                 # and overlapped ring against Ulysses and 1 GPU, eager and
#                                                 # compiled; compiled memory with the fused weights held once),
#                                                 # then the exchange alone (benchmarks/ulysses_exchange.py:
#                                                 # all-to-all, head blocks, copy engines; two NCCL priorities)
#   bash benchmarks/h200x2_next.sh start fa4      # ~15 min, after benchmarks/fa4_wheels.sh stage + install:
#                                                 # GPU 0: issue 6's forward timings (with FA4) then FP8 fidelity
#                                                 # compiled, while GPU 1 runs stock WanPipeline against wanbench
#                                                 # end to end; then follow-ups suite 3 (now with FA4 rows); then
#                                                 # the exchange alone
#   bash benchmarks/h200x2_next.sh start nccl     # ~6 min: does NCCL move Ulysses' 168 MB all-to-all faster than
#                                                 # 143-191 GB/s (NVLink NV18 carries ~450)? The exchange alone
#                                                 # under NCCL's choice, 16 and 32 channels and 32 point-to-point
#                                                 # channels; then 1 GPU and
#                                                 # Ulysses 2 (5 steps, eager, cuDNN; suite ulysses2-5steps.toml:
#                                                 # diffusers' exchange and head blocks with the host lead bounded)
#                                                 # under NCCL's choice, and again under the fastest variant where
#                                                 # it beat NCCL's choice by 5%
#                                                 # (ran in session 6: results/h200x2/nccl-session6; its fifth
#                                                 # variant, NCCL_P2P_USE_CUDA_MEMCPY=1, ran at 65 GB/s and then
#                                                 # hung an all-to-all for NCCL's 10-minute timeout: dropped)
#   bash benchmarks/h200x2_next.sh start issue3   # ~26 min, next: issue 3's whole table in one run. Checks first
#                                                 # (2-step a14b latents, eager: all-to-all against the copy-engine
#                                                 # exchange, engine/ulysses_copy.py, which writes into the peers
#                                                 # since session 8); then strategies3-2gpu.toml (1 GPU, group offload
#                                                 # capped at 32 GB, CFG, Ulysses 2 all-to-all / copy engine / copy
#                                                 # engine + FSDP; 10 steps, eager, cuDNN), then
#                                                 # compiled-ulysses2-2gpu.toml (1 GPU, Ulysses 2 all-to-all and copy
#                                                 # engine, compiled: which exchange should be the default); the
#                                                 # copy-engine rows are cut if its check fails
#                                                 # (pull, its predecessor, ran in session 8: results/h200x2/session8)
#   bash benchmarks/h200x2_next.sh start probe    # ~6 min: the pull part's copy-engine check hung silently (session 7);
#                                                 # its transport step by step (benchmarks/copy_engine_probe.py),
#                                                 # then tiny and a14b (2 steps) generates with it, each killed
#                                                 # rank naming where it was (launch/stacks.py)
#   bash benchmarks/h200x2_next.sh start barrier  # ~5 min: the probe found the transport sound alone and the a14b
#                                                 # generate stalled in its forward: the copy-engine check again with
#                                                 # the NCCL barrier (now the default), then with the device barrier
#                                                 # (30 s kernel timeout), workers' logs and stacks kept
#                                                 # (ran in session 7: results/h200x2/copy-engine-session7)
#   bash benchmarks/h200x2_next.sh start profile  # ~6 min: copy_engine_probe.py (the exchange and a layer with cuDNN
#                                                 # attention against NCCL's, one barrier's cost), then where a
#                                                 # step's time goes (benchmarks/profile_step.py: device time by kind
#                                                 # and GPU idle) for Ulysses 2 copy engine and all-to-all and 1 GPU
#                                                 # (eager, cuDNN; ran in session 8 with the pulled exchange and head
#                                                 # chunks: results/h200x2/session8/profile)
#                                                 # (issue3 ran in session 9: results/h200x2/session9/issue3; the
#                                                 # copy engine's latents came out 1.4e-2 from all-to-all's, where
#                                                 # the pulled exchange had been bit-identical)
#   bash benchmarks/h200x2_next.sh start verify   # ~18 min, next: why? copy_engine_probe.py (now with 12 layers back
#                                                 # to back, and with one rank held back, against NCCL bit for bit),
#                                                 # then 2-step a14b latents (eager, cuDNN): 1 GPU, all-to-all,
#                                                 # copy engine twice (deterministic?) and under
#                                                 # CUDA_LAUNCH_BLOCKING=1 (a race would vanish), compared pairwise;
#                                                 # then offload-1gpu.toml (resident, and group offload capped at
#                                                 # 32 GB from before loading, which now happens in host memory,
#                                                 # without and with --offload-record-stream)
#                                                 # (ran in session 10: results/h200x2/session10/verify; the copy
#                                                 # engine differed in one run of three, never under
#                                                 # CUDA_LAUNCH_BLOCKING=1, the probe's stress passed)
#   bash benchmarks/h200x2_next.sh start firstwrites  # ~6 min (ran in session 10: results/h200x2/session10/
#                                                 # firstwrites; symmetric memory alone lost them all, PeerBuffer
#                                                 # none; copy engine 6/6 bit-identical): the suspect, a peer's first writes into a buffer
#                                                 # whose allocation is not done on a rank behind on its stream
#                                                 # (copy_engine_probe.py stage 8, with symmetric memory alone and
#                                                 # through PeerBuffer, which now settles the allocation first); then
#                                                 # 2-step a14b latents (eager, cuDNN): all-to-all once, the copy
#                                                 # engine 6 times, each compared with all-to-all as it ends
#   bash benchmarks/h200x2_next.sh wait decide|mlperf|ring|fa4|nccl|issue3|verify|firstwrites|probe|barrier|profile
source benchmarks/device_preamble.sh
part=${2:?decide|mlperf|ring|fa4|nccl|issue3|verify|firstwrites|probe|barrier|profile}
case "$part" in
  decide) job='python3 -m wanbench.cli bench benchmarks/suites/followups2-2gpu.toml --out $BG_DIR/followups2-2gpu \
                 --no-report;
               python3 benchmarks/speed.py --part forward --repeats 3 --out $BG_DIR/speed-h200-1gpu-forward.json' ;;
  mlperf) job='python3 -m wanbench.cli mlperf --scenario SingleStream --gpus 2 --size 1280*720 --min-query-count 3 \
                 --min-duration 0 --warmup-steps 2 --timeout 1500 --no-compile --no-vae-pipeline \
                 --out $BG_DIR/mlperf-ss-1280x720-3q' ;;
  ring) job='python3 -m wanbench.cli bench benchmarks/suites/followups3-2gpu.toml --out $BG_DIR/followups3-2gpu \
                 --no-report;
             for p in "" --high-priority; do python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/ulysses_exchange.py $p \
                 --out $BG_DIR/ulysses-exchange-h200x2${p:+-high-priority}.json; done' ;;
  fa4) job='(CUDA_VISIBLE_DEVICES=0 python3 benchmarks/speed.py --part forward --repeats 3 \
                 --out $BG_DIR/speed-h200-1gpu-forward.json;
               CUDA_VISIBLE_DEVICES=0 python3 benchmarks/fidelity.py --steps 10 --repeats 1 --modes fp8 --compile \
                 --out $BG_DIR/fidelity-h200-compiled.json) > $BG_DIR/gpu0.log 2>&1 &
             CUDA_VISIBLE_DEVICES=1 python3 benchmarks/speed.py --part e2e --steps 20 --repeats 1 \
                 --out $BG_DIR/speed-h200-1gpu-e2e.json > $BG_DIR/gpu1.log 2>&1 &
             wait;
             python3 -m wanbench.cli bench benchmarks/suites/followups3-2gpu.toml --out $BG_DIR/followups3-2gpu \
                 --no-report;
             python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/ulysses_exchange.py \
                 --out $BG_DIR/ulysses-exchange-h200x2.json' ;;
  nccl) job='declare -A variants=([default]="" [ch16]="NCCL_MIN_NCHANNELS=16 NCCL_MAX_NCHANNELS=16"
               [ch32]="NCCL_MIN_NCHANNELS=32 NCCL_MAX_NCHANNELS=32" [p2p32]="NCCL_MIN_P2P_NCHANNELS=32");
             for v in default ch16 ch32 p2p32; do
               env ${variants[$v]} python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/ulysses_exchange.py \
                 --out $BG_DIR/ulysses-exchange-$v.json;
             done;
             best=$(python3 -c "import json,sys; t={v: json.load(open(f\"$BG_DIR/ulysses-exchange-{v}.json\"))[\"exchange_stream\"][\"median_ms\"] for v in sys.argv[1:]}; b=min(t, key=t.get); print(b if t[b] < 0.95 * t[\"default\"] else \"default\")" default ch16 ch32 p2p32);
             echo "fastest exchange: $best";
             python3 -m wanbench.cli bench benchmarks/suites/ulysses2-5steps.toml --no-report --out $BG_DIR/ulysses2-default;
             if [ "$best" != default ]; then
               env ${variants[$best]} python3 -m wanbench.cli bench benchmarks/suites/ulysses2-5steps.toml --no-report \
                 --out $BG_DIR/ulysses2-$best;
             fi' ;;
  issue3) job='for x in all-to-all copy-engine; do
               python3 -m wanbench.cli generate --model a14b --weights random --size 480*832 --steps 2 --gpus 2 \
                 --ulysses 2 --ulysses-exchange $x --no-compile --attention cudnn --output none --timeout 240 \
                 --save-latents $BG_DIR/check-$x.safetensors --json $BG_DIR/check-$x.json || break;
             done;
             python3 -c "from safetensors.torch import load_file as l; import json; d=\"$BG_DIR\"; \
               a, b = (l(f\"{d}/check-{x}.safetensors\")[\"latents\"].float() for x in (\"all-to-all\", \"copy-engine\")); \
               r = {\"rel_error\": ((a - b).norm() / a.norm()).item(), \"identical\": bool((a == b).all())}; \
               print(r); json.dump(r, open(f\"{d}/check-latents.json\", \"w\"))";
             suites="strategies3-2gpu compiled-ulysses2-2gpu";
             if ! python3 -c "import json, sys; sys.exit(json.load(open(\"$BG_DIR/check-copy-engine.json\"))[\"status\"] != \"ok\")"; then
               echo "copy-engine check failed: its rows are left out";
               for s in $suites; do python3 -c "import sys; s = open(sys.argv[1]).read(); \
                 open(sys.argv[2], \"w\").write(s[:s.index(\"[[configs]]\ngpus = 2\nulysses = 2\nulysses_exchange = \\\"copy-engine\\\"\")])" \
                 benchmarks/suites/$s.toml benchmarks/suites/$s.toml; done;
             fi;
             for s in $suites; do python3 -m wanbench.cli bench benchmarks/suites/$s.toml --no-report --out $BG_DIR/$s; done' ;;
  verify) job='timeout 300 python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/copy_engine_probe.py \
               --out $BG_DIR/probe.json > $BG_DIR/probe.log 2>&1; echo "probe: rc $?";
             common="--model a14b --weights random --size 480*832 --steps 2 --no-compile --attention cudnn \
               --output none --timeout 240";
             u2="--gpus 2 --ulysses 2 --ulysses-exchange";
             declare -A runs=([one-gpu]="" [all-to-all]="$u2 all-to-all" [copy-engine-1]="$u2 copy-engine"
               [copy-engine-2]="$u2 copy-engine" [copy-engine-blocking]="$u2 copy-engine");
             for r in one-gpu all-to-all copy-engine-1 copy-engine-2 copy-engine-blocking; do
               env $([ $r = copy-engine-blocking ] && echo CUDA_LAUNCH_BLOCKING=1) python3 -m wanbench.cli generate \
                 $common ${runs[$r]} --save-latents $BG_DIR/$r.safetensors --json $BG_DIR/$r.json; echo "$r: rc $?";
             done;
             python3 benchmarks/compare_latents.py $BG_DIR/*.safetensors --out $BG_DIR/check-latents.json;
             python3 -m wanbench.cli bench benchmarks/suites/offload-1gpu.toml --no-report --out $BG_DIR/offload-1gpu' ;;
  firstwrites) job='timeout 300 python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/copy_engine_probe.py \
               --out $BG_DIR/probe.json > $BG_DIR/probe.log 2>&1; echo "probe: rc $?"; grep first_writes $BG_DIR/probe.log;
             common="--model a14b --weights random --size 480*832 --steps 2 --no-compile --attention cudnn \
               --output none --timeout 240 --gpus 2 --ulysses 2 --ulysses-exchange";
             python3 -m wanbench.cli generate $common all-to-all --save-latents $BG_DIR/all-to-all.safetensors \
               --json $BG_DIR/all-to-all.json; echo "all-to-all: rc $?";
             for i in 1 2 3 4 5 6; do
               python3 -m wanbench.cli generate $common copy-engine --save-latents $BG_DIR/copy-engine-$i.safetensors \
                 --json $BG_DIR/copy-engine-$i.json; echo "copy-engine-$i: rc $?";
               python3 benchmarks/compare_latents.py $BG_DIR/all-to-all.safetensors $BG_DIR/copy-engine-$i.safetensors \
                 --out $BG_DIR/check-copy-engine-$i.json;
             done' ;;
  probe) job='timeout 150 python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/copy_engine_probe.py \
               --out $BG_DIR/probe.json > $BG_DIR/probe.log 2>&1; echo "probe: rc $?";
             python3 -m wanbench.cli generate --model tiny --gpus 2 --ulysses 2 --ulysses-exchange copy-engine --steps 2 \
               --output none --timeout 100 --json $BG_DIR/tiny-copyengine.json && \
             python3 -m wanbench.cli generate --model a14b --weights random --size 480*832 --steps 2 --gpus 2 \
               --ulysses 2 --ulysses-exchange copy-engine --no-compile --attention cudnn --output none --timeout 180 \
               --save-latents $BG_DIR/check-copyenginenocompile.safetensors --json $BG_DIR/check-copyenginenocompile.json' ;;
  barrier) job='for b in nccl device; do
               WANBENCH_PEER_BARRIER=$b python3 -m wanbench.cli generate --model a14b --weights random --size 480*832 \
                 --steps 2 --gpus 2 --ulysses 2 --ulysses-exchange copy-engine --no-compile --attention cudnn \
                 --output none --timeout 150 --save-latents $BG_DIR/check-copyengine-$b.safetensors \
                 --json $BG_DIR/check-copyengine-$b.json; echo "barrier $b: rc $?";
             done; for d in /tmp/wanbench-*; do cp -r $d $BG_DIR/; done; grep -h -i "timeout\|error" /tmp/wanbench-*/workers.log | head -20' ;;
  profile) job='timeout 150 python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/copy_engine_probe.py \
               --out $BG_DIR/probe.json > $BG_DIR/probe.log 2>&1; echo "probe: rc $?";
             common="--model a14b --weights random --size 480*832 --no-compile --attention cudnn";
             for x in copy-engine all-to-all; do
               name=$(echo $x | tr -d " -");
               timeout 300 python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/profile_step.py \
                 --out $BG_DIR/profile-ulysses2-$name.json -- $common --gpus 2 --ulysses 2 --ulysses-exchange $x \
                 > $BG_DIR/profile-ulysses2-$name.log 2>&1; echo "profile $x: rc $?";
             done;
             CUDA_VISIBLE_DEVICES=0 timeout 300 python3 benchmarks/profile_step.py --out $BG_DIR/profile-1gpu.json -- \
               $common > $BG_DIR/profile-1gpu.log 2>&1; echo "profile 1 GPU: rc $?"' ;;
  *) echo "part: decide, mlperf, ring, fa4, nccl, issue3, verify, firstwrites, probe, barrier or profile" >&2; exit 2 ;;
esac
case "${1:?start|wait}" in
  start) bash benchmarks/device_background.sh start "$part" "$job"
         bash benchmarks/device_background.sh wait "$part" 540 ;;
  wait)  bash benchmarks/device_background.sh wait "$part" "${3:-560}" ;;
esac
