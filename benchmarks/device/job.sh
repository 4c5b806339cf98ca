#!/usr/bin/env bash
# Runs longer than one 10-minute device call: start a job in its own process session (it outlives the
# call while the machine stays held), then poll it from follow-up calls issued within the warm window.
#   bash benchmarks/device/job.sh start NAME 'COMMAND ...'   # returns at once (GPU list, topology to $OUT)
#   bash benchmarks/device/job.sh wait NAME [SECONDS]         # waits up to SECONDS (default 570),
#                                                                    # then copies /tmp/bg/NAME.tgz to $OUT
# COMMAND writes its results under /tmp/bg/NAME (exported as BG_DIR); its log is /tmp/bg/NAME/job.log.
source benchmarks/device/preamble.sh
action=${1:?start|wait}; name=${2:?NAME}; dir=/tmp/bg/$name
case "$action" in
  start)
    nvidia-smi --query-gpu=index,name,memory.total,driver_version,pci.bus_id --format=csv > "$OUT/gpus.csv"
    nvidia-smi topo -m > "$OUT/topo.txt" 2>&1
    # The job runs from its own snapshot of the tree: a later call re-copies the working tree under it.
    mkdir -p "$dir/tree" && cp -a src benchmarks pyproject.toml "$dir/tree/"
    [ -f .wanbench-revision ] && cp .wanbench-revision "$dir/tree/"
    BG_DIR=$dir setsid nohup bash -c "cd $dir/tree; source benchmarks/device/preamble.sh; export BG_DIR=$dir; $3; echo \$? > $dir/rc" \
      > "$dir/job.log" 2>&1 < /dev/null &
    echo "started $name (pid $!)" ;;
  wait)
    deadline=$((SECONDS + ${3:-570}))
    while [ ! -f "$dir/rc" ] && [ $SECONDS -lt $deadline ]; do sleep 5; done
    tail -5 "$dir/job.log"
    if [ -f "$dir/rc" ]; then echo "done: rc $(cat "$dir/rc")"; else echo "still running"; fi
    # Latents (.safetensors, 8 MB each at 480*832) are left on the machine: with them the archive outgrew what a
    # call brings back; the jobs compare them there and write the result as JSON.
    tar czf "$OUT/$name.tgz" -C /tmp/bg --exclude="$name/tree" --exclude="*.safetensors" "$name" ;;
esac
