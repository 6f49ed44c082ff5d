#!/usr/bin/env bash
# GPU run of captioning, for a machine with an NVIDIA GPU; not run on the CPU-only machines.
#
#   bash benchmarks/gpu.sh [LOG]            (from the repository root; LOG defaults to gpu-run.log)
#
# 1. A fresh virtual environment ($GPU_VENV, default /tmp/captioning-gpu-venv) made by $GPU_PYTHON (default python3;
#    it must be Python 3.8-3.11: numpy<1.24, which MXNet 1.9.1 needs, has no wheels for 3.12 and later) with the CUDA
#    build of MXNet 1.9.1: mxnet-cu117, else mxnet-cu112 ($MXNET_GPU_PACKAGES to choose others). Where the machine
#    cannot reach a package index, put the wheels (mxnet-cu1xx, numpy 1.23 and the project's other requirements) in
#    a folder and set $WHEELS: pip then installs with --no-index --find-links "$WHEELS".
# 2. Checks that the build can run on the card before importing it (python -m benchmarks.cuda_compat): the GPU code
#    in libmxnet.so against the card's compute capability, and the CUDA 11 libraries it links (cudart 11, cuBLAS 11,
#    cuDNN 8, ...; the wheels do not ship them). MXNet 1.9.1's CUDA builds carry machine code for compute capability
#    5.0-8.6 and no PTX, so a Hopper (9.0) or newer card has no kernel image for them.
# 3. Checks that MXNet computes on the card: a product on gpu(0), compared with the CPU.
# 4. Runs the GPU-marked tests (pytest -m gpu: tests/integration/test_gpu.py), then, where ../shared holds FLICKR-A,
#    200 training updates of the tutorial model (python -m captioning.train --device-ids 0) and captioning of the dev
#    features at beam 3, batch 64 and batch 1 on gpu(0). These are checks, not recorded benchmarks.
# Everything goes to LOG; the script goes on after a failed step and ends with a summary of each step's status.
set -u
LOG=${1:-gpu-run.log}
VENV=${GPU_VENV:-/tmp/captioning-gpu-venv}
PYTHON=${GPU_PYTHON:-python3}
PACKAGES=${MXNET_GPU_PACKAGES:-"mxnet-cu117==1.9.1 mxnet-cu112==1.9.1"}
REPO=$(cd "$(dirname "$0")/.." && pwd)
exec > >(tee "$LOG") 2>&1
declare -a SUMMARY
step() { local name=$1; shift; echo "== $name: $*"; if "$@"; then SUMMARY+=("$name: ok"); return 0; else
  local rc=$?; SUMMARY+=("$name: FAILED (exit $rc)"); return $rc; fi; }

echo "== $(date -u) on $(hostname); repository $REPO"
if ! command -v nvidia-smi >/dev/null; then echo "no nvidia-smi: this machine has no NVIDIA GPU driver"; exit 1; fi
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv || nvidia-smi
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)
lscpu | grep "Model name"

pip_install() {
  if [ -n "${WHEELS:-}" ]; then "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" "$@"
  else "$VENV/bin/pip" install -q "$@"; fi
}
install() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info >= (3, 12))' || {
    echo "$("$PYTHON" --version): numpy<1.24 (MXNet 1.9.1) has no wheels for it; set GPU_PYTHON to a Python 3.8-3.11"
    return 1; }
  "$PYTHON" -m venv "$VENV" || return 1
  local pkg
  for pkg in $PACKAGES; do
    if pip_install "$pkg" "numpy>=1.23,<1.24"; then echo "installed $pkg"; INSTALLED=$pkg; break; fi
    echo "could not install $pkg"
  done
  [ -n "${INSTALLED:-}" ] || return 1
  # the project without its CPU mxnet requirement, then its other requirements (setup.py INSTALL_REQUIRES)
  pip_install --no-deps -e "$REPO" && pip_install "Pillow>=9" "matplotlib>=3.5,<3.11" "sacrebleu>=2.3" tqdm \
    "PyYAML>=5.4" pytest || return 1
}
INSTALLED=""
step install install || { printf '%s\n' "${SUMMARY[@]}"; exit 1; }
PY="$VENV/bin/python"

check_card() {
  "$PY" - "$CAP" <<'EOF'
import sys, time
import mxnet as mx
cap = sys.argv[1]
print("MXNet %s, GPUs seen: %d, compute capability %s" % (mx.__version__, mx.context.num_gpus(), cap))
if mx.context.num_gpus() == 0:
    sys.exit("MXNet sees no GPU (driver or CUDA runtime mismatch)")
try:
    start = time.time()
    a = mx.nd.random.uniform(shape=(512, 512), ctx=mx.gpu(0))
    b = mx.nd.dot(a, a).asnumpy()
    print("first GPU product in %.1f s (a long first call means the driver JIT-compiled PTX)" % (time.time() - start))
    ref = mx.nd.dot(a.as_in_context(mx.cpu()), a.as_in_context(mx.cpu())).asnumpy()
    print("max |gpu - cpu| = %.2e" % abs(b - ref).max())
except mx.base.MXNetError as e:
    text = str(e).splitlines()[0]
    if "no kernel image" in str(e):
        sys.exit("this card (compute capability %s) is too new for the CUDA 11 build of MXNet 1.9.1: %s" % (cap, text))
    sys.exit("MXNet failed on the GPU: %s" % text)
EOF
}
compatible() { (cd "$REPO" && "$PY" -m benchmarks.cuda_compat "$VENV"/lib/python3*/site-packages/mxnet/libmxnet.so); }
step "CUDA compatibility" compatible || { printf '%s\n' "${SUMMARY[@]}"; exit 1; }
step "card check" check_card || { printf '%s\n' "${SUMMARY[@]}"; exit 1; }

cd "$REPO" || exit 1
gpu_tests() { "$PY" -m pytest -q -p no:cacheprovider -m gpu tests; local rc=$?; [ $rc -eq 5 ] && {
  echo "no tests are marked gpu"; return 0; }; return $rc; }
step "gpu tests" gpu_tests

FEATS=/work/bench/features-head_conv
DATA="$REPO/../shared/data/flickr8k-sample"
if [ -d "$DATA" ] && [ -f "$FEATS/dev.features" ]; then
  train_gpu() {
    "$PY" -m captioning.train --source-root "$FEATS" --source /work/bench/lists/train.features \
      --target /work/bench/lists/train.captions --validation-source "$FEATS/dev.features" \
      --validation-target "$DATA/dev.captions.0" --output /tmp/gpu-model --overwrite-output \
      --encoder image-pretrain-cnn --decoder rnn --num-layers 1:1 --rnn-num-hidden 512 \
      --rnn-decoder-state-init zero --rnn-attention-type mlp --image-encoder-num-hidden 512 --num-embed 512 \
      --batch-type sentence --batch-size 64 --initial-learning-rate 0.0003 --gradient-clipping-type abs \
      --gradient-clipping-threshold 1.0 --bucket-width 5 --max-seq-len 1:60 --weight-normalization --seed 13 \
      --load-all-features-to-memory --max-updates 200 --checkpoint-interval 200 --decode-and-evaluate 0 \
      --device-ids 0 && grep "samples/s" /tmp/gpu-model/log
  }
  step "training on gpu(0)" train_gpu
  caption_gpu() {
    local batch
    for batch in 64 1; do
      "$PY" -m captioning.captioner --models /tmp/gpu-model --input "$FEATS/dev.features" --source-root "$FEATS" \
        --beam-size 3 --batch-size "$batch" --max-output-length 30 --device-ids 0 --output /tmp/gpu-captions \
        2>&1 | grep "captions/s" || return 1
    done
  }
  step "captioning on gpu(0)" caption_gpu
else
  echo "no FLICKR-A features ($FEATS) or data ($DATA): training and captioning benchmarks skipped"
  SUMMARY+=("FLICKR-A benchmarks: skipped (no data)")
fi
echo "== summary"; printf '%s\n' "${SUMMARY[@]}"
