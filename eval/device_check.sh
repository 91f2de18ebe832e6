#!/usr/bin/env bash
# One prepared accelerator check for SPAE: correctness of the quantizer (the fused kernel too) and
# losses on the accelerator, then the bf16 benchmark (quantizer GFLOP/s at 49k and 262k words, train-step MFU of
# the tiny and ImageNet-128 configs) against a matmul peak measured in the same run.
#
#     OUT=eval_out/device bash eval/device_check.sh              # everything (up to about 11 min)
#     STEP=tests bash eval/device_check.sh; STEP=bench bash ...  # the same in two calls under 10 min each
#
# Runs under whatever JAX the machine has (no install). Where its Flax/optax cannot run the
# step, it falls back to the pinned wheels in .whl/ (pip download flax==0.12.8 optax==0.2.8).
# Everything it measures lands in $OUT: env.txt, tests.log, bench_spae_bf16.{md,json}.
# docs/results/device_h200 holds one run (H200). Its step FLOPs came from XLA's cost analysis,
# which misses cuDNN convolutions, so they were recounted from the jaxpr here, keeping its times:
#     python -m eval.bench_spae --timings docs/results/device_h200/bench_spae_bf16_timings.json \
#         --config train/configs/spae_tiny.py --config train/configs/spae_imagenet128_gemma.py \
#         --set model.dtype=bfloat16 --set data.batch_size=64 --out docs/results/device_h200/bench_spae_bf16
set -u
OUT=${OUT:-eval_out/device}
STEP=${STEP:-all}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  $PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
} | tee "$OUT/env.txt"

# A one-step smoke run decides whether the machine's Flax/optax will do.
if ! timeout 120 $PY -m eval.bench_spae --tokens 256 --vocab 1024 --dim 64 --matmul 512 \
        --config train/configs/spae_tiny.py --steps 1 --out /tmp/smoke >/tmp/smoke.log 2>&1; then
    echo "machine's flax/optax failed the smoke step; using .whl/ pins" | tee -a "$OUT/env.txt"
    tail -5 /tmp/smoke.log | tee -a "$OUT/env.txt"
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    $PY -c "import flax, optax; print('now flax', flax.__version__, 'optax', optax.__version__)" | tee -a "$OUT/env.txt"
fi

# Correctness on the accelerator: SAQ ids against brute force, chunked == unchunked, losses
# against NumPy (tests that need no LLM weights or datasets).
# tests/test_spae_fused_search.py there runs the fused search as its real Triton kernel.
[ "$STEP" = bench ] || timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_spae_quantizer.py tests/test_spae_fused_search.py \
    tests/test_spae_losses.py \
    2>&1 | tail -25 | tee "$OUT/tests.log"

# bf16 benchmark: 16,384 tokens = a batch of 64 ImageNet-128 images x 16 x 16 latent positions,
# both per-chunk reductions of the XLA search (argmin is the default off a CPU; whether min_index is
# faster there too is to be measured: the H200 run in docs/results had argmin only) and the fused
# Pallas kernel (spae.fused_search, never timed yet) at four tile plans; the same batch of 64 for
# the train steps (256 images and 65,536 tokens ran past 300 s, compile and autotuning included).
# Rows are written as they finish; a tile plan the GPU refuses is a failed row, not a stop.
[ "$STEP" = tests ] || timeout 420 $PY -m eval.bench_spae --dtype bfloat16 --tokens 16384 --matmul 8192 \
    --vocab 49152 262144 --dim 576 640 --chunk 8192 --reduction argmin min_index fused \
    --fused-plan 128x128x64,w8,s3 128x256x64,w8,s3 64x128x64,w4,s4 128x64x64,w4,s4 \
    --config train/configs/spae_tiny.py --config train/configs/spae_imagenet128_gemma.py \
    --set model.dtype=bfloat16 --set data.batch_size=64 --steps 3 --out "$OUT/bench_spae_bf16" 2>&1 | grep -v cuda_timer
