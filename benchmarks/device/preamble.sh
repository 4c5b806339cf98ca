# Sourced at the start of every device-machine command: carried wheels, source path, NCCL safety.
# Once per machine: a second install while a background job imports from /tmp/site would swap its files.
if [ ! -f /tmp/site/.wanbench-installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  touch /tmp/site/.wanbench-installed
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# FlashAttention 4, where benchmarks/device/fa4_wheels.sh installed it on this machine (its DSL's .pth is not read
# from a --target folder, hence the second path)
if [ -d /tmp/fa4site ]; then
  export PYTHONPATH=$PYTHONPATH:/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages
fi
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# The revision file is written here before each device call (.git does not travel).
[ -f .wanbench-revision ] && export $(cat .wanbench-revision)
