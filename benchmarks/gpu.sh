#!/usr/bin/env bash
# Training and inference speed on one CUDA GPU, at 256 and 512 px with the classic U-Net width
# (features 64..1024), in about 8 minutes. Run from anywhere on a machine with a GPU:
#
#     bash benchmarks/gpu.sh
#
# Installs the project (and PyTorch/MONAI) into the active Python where they are not importable yet, so it
# also runs offline where they are (gpu_session.sh puts them on PYTHONPATH), then prints one JSON line per
# benchmark: images/s of the bundle's trainer and of a bare loop, their ratio, the model FLOP utilisation
# (training FLOP/s over the card's dense bf16 peak), peak GPU memory, and inference slices/s end to end
# against the bare forward pass plus file I/O. A benchmark that fails or runs out of time is reported and the
# others still run; the exit status is 1 if any failed. GPU_SH_DEADLINE (optional, seconds since the epoch)
# shortens each benchmark's time limit so that all of them end by then.
set -euo pipefail
cd "$(dirname "$0")/.."

python -c "import torch, monai" 2>/dev/null || python -m pip install --quiet torch monai
# From benchmarks/, as the benchmark scripts run: the checkout itself is not on the path there.
(cd benchmarks && python -c "import pipeline, ignite, nibabel") 2>/dev/null || python -m pip install --quiet -e .
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"

failed=0
bench() {  # bench SECONDS SCRIPT ARGS...: one benchmark under its time limit (less if GPU_SH_DEADLINE is nearer)
    local limit=$1 script=$2
    shift
    if [[ -n "${GPU_SH_DEADLINE:-}" ]]; then
        limit=$((GPU_SH_DEADLINE - $(date +%s) < limit ? GPU_SH_DEADLINE - $(date +%s) : limit))
    fi
    if ((limit <= 0)); then
        echo "gpu.sh: $script skipped, no time left" >&2
        failed=1
        return
    fi
    timeout "$limit" python "$@" || { echo "gpu.sh: $script failed or ran out of time (exit $?)" >&2; failed=1; }
}

classic=64,128,256,512,1024
for size in 256 512; do
    batch=$((size == 256 ? 16 : 8))
    # The recipe as shipped on a GPU with bf16 (AMP bf16, channels-last weights), then with fp16 and gradient
    # scaling, the recipe on GPUs without bf16; --amp-dtype sets the bare loop's precision to match.
    for dtype in bf16 fp16; do
        bench 150 benchmarks/bench_training.py --size "$size" --features "$classic" --batch "$batch" \
            --iterations 40 --epochs 2 --warmup 5 --amp-dtype "$dtype" --channels-last
    done
done
bench 120 benchmarks/bench_inference.py --size 256 --features "$classic" --slices 64 --workers 4
bench 90 benchmarks/bench_data.py --size 256 --slices 64 --steps 1 --workers 0,4
exit "$failed"
