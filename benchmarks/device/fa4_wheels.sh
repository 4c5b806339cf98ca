#!/usr/bin/env bash
# FlashAttention 4 (CuTe DSL) for the device machines, which reach no package index. Its CUDA 13 DSL library
# wheel (92 MB) is larger than one call may carry (64 MiB with the tree), so it travels in two halves:
#   here:    bash benchmarks/device/fa4_wheels.sh fetch          # downloads into .fa4a/ and .fa4b/ (git-ignored)
#   device:  bash benchmarks/device/fa4_wheels.sh stage          # call 1, carry [".fa4a", ...]: copies to /tmp/fa4
#            bash benchmarks/device/fa4_wheels.sh install        # call 2, carry [".fa4b", ...]: joins, installs
# device_preamble.sh puts /tmp/fa4site on PYTHONPATH once installed (a later call on the same warm machine).
set -e
cd "$(dirname "$0")/../.."
case "${1:?fetch|stage|install}" in
  fetch)
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp" \
      flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
      nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 quack-kernels==0.6.5 \
      apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5
    mkdir -p .fa4a .fa4b && rm -f .fa4a/* .fa4b/*
    split -b 44M "$tmp"/nvidia_cutlass_dsl_libs_cu13-*.whl "$tmp/cu13.part."
    mv "$tmp/cu13.part.aa" "$tmp"/flash_attn_4-*.whl "$tmp"/nvidia_cutlass_dsl-4*.whl "$tmp"/quack_kernels-*.whl \
      "$tmp"/torch_c_dlpack_ext-*.whl .fa4a/
    mv "$tmp/cu13.part.ab" "$tmp"/apache_tvm_ffi-*.whl "$tmp"/nvidia_cutlass_dsl_libs_base-*.whl \
      "$tmp"/nvidia_cutlass_dsl_libs_core-*.whl .fa4b/
    grep -qx '/.fa4a/' .git/info/exclude || printf '/.fa4a/\n/.fa4b/\n' >> .git/info/exclude
    du -sh .fa4a .fa4b ;;
  stage)
    mkdir -p /tmp/fa4 && cp .fa4a/* /tmp/fa4/ ;;
  install)
    cp .fa4b/* /tmp/fa4/
    cat /tmp/fa4/cu13.part.* > /tmp/fa4/nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl
    rm -f /tmp/fa4/cu13.part.*
    # one pip call: the DSL's wheels share the nvidia_cutlass_dsl folder, which --target would not merge later
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fa4site /tmp/fa4/*.whl
    PYTHONPATH=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages python3 -c "import flash_attn.cute" \
      && echo "flash_attn.cute installed" ;;
esac
