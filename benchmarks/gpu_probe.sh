#!/usr/bin/env bash
# Can MXNet 1.9.1's CUDA builds run on this machine's GPU? A probe of a few seconds for a GPU machine that may have no
# package index (run there on 2026-11-30, an H200: docs/benchmarks.md, "GPU"). From the repository root:
#
#   python benchmarks/cuda_compat.py mxnet_cu117-1.9.1-...whl --save-summary cu117.json    # where the wheel is
#   bash benchmarks/gpu_probe.sh cu117.json [cu112.json ...]                                 # on the GPU machine
#
# Prints the card, the CUDA toolkit and Python there, checks each summarised wheel against the card and the libraries
# found there (benchmarks/cuda_compat.py), and builds benchmarks/kernel_image.cu three ways (SASS 8.6 only, as in
# the wheels; SASS + PTX 8.6; SASS 9.0) to show what the card runs, with cuobjdump's listing of each binary.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
COMPAT="python3 $REPO/benchmarks/cuda_compat.py"
echo "== $(date -u)"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
nvidia-smi | grep -m1 "CUDA Version"; lscpu | grep "Model name"; nproc
echo "== python"; python3 --version; python3 -c "import numpy; print('numpy', numpy.__version__)"
timeout 30 python3 -m pip download --timeout 5 --retries 0 --no-deps -d "$(mktemp -d)" "numpy<1.24" 2>&1 | tail -2
echo "== CUDA toolkit"; nvcc --version | tail -2
echo "== CUDA libraries installed"
ldconfig -p | grep -E "libcudart|libcublas\.|libcudnn\.|libnccl" | head
for summary in "$@"; do echo "== $summary"; $COMPAT --summary "$summary"; echo "rc=$?"; done
echo "== benchmarks/kernel_image.cu built three ways"
BUILD=$(mktemp -d)
nvcc -gencode arch=compute_86,code=sm_86 -o "$BUILD/sass86" "$REPO/benchmarks/kernel_image.cu" &&
  nvcc -gencode arch=compute_86,code=[sm_86,compute_86] -o "$BUILD/ptx86" "$REPO/benchmarks/kernel_image.cu" &&
  nvcc -gencode arch=compute_90,code=sm_90 -o "$BUILD/sass90" "$REPO/benchmarks/kernel_image.cu" || exit 1
for b in sass86 ptx86 sass90; do
  echo "-- $b"; cuobjdump --list-elf --list-ptx "$BUILD/$b"
  $COMPAT "$BUILD/$b" | grep -E "^(SASS|PTX|card|verdict)"; "$BUILD/$b"; echo "rc=$?"
done
