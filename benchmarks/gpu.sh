#!/usr/bin/env bash
# Training and inference speed on one CUDA GPU, at 256 and 512 px with the classic U-Net width
# (features 64..1024), in about 8 minutes. Run from anywhere on a machine with a GPU:
#
#     bash benchmarks/gpu.sh
#
# Installs the project (and PyTorch/MONAI where missing) into the active Python, then prints one JSON line
# per benchmark: images/s of the bundle's trainer and of a bare loop, their ratio, the model FLOP utilisation
# (training FLOP/s over the card's dense bf16 peak), peak GPU memory, and inference slices/s end to end
# against the bare forward pass plus file I/O.
set -euo pipefail
cd "$(dirname "$0")/.."

python -c "import torch, monai" 2>/dev/null || python -m pip install --quiet torch monai
python -m pip install --quiet -e .
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"

classic=64,128,256,512,1024
for size in 256 512; do
    batch=$((size == 256 ? 16 : 8))
    # The bundle as shipped on CUDA (AMP fp16 with gradient scaling), then the recipe: bf16, channels-last.
    timeout 150 python benchmarks/bench_training.py --size "$size" --features "$classic" --batch "$batch" \
        --iterations 40 --epochs 2 --warmup 5
    timeout 150 python benchmarks/bench_training.py --size "$size" --features "$classic" --batch "$batch" \
        --iterations 40 --epochs 2 --warmup 5 --amp-dtype bf16 --channels-last
done
timeout 120 python benchmarks/bench_inference.py --size 256 --features "$classic" --slices 64 --workers 4
timeout 90 python benchmarks/bench_data.py --size 256 --slices 64 --steps 1 --workers 0,4
