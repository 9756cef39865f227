#!/usr/bin/env bash
# One GPU session in at most 9.5 minutes, on a machine with no network: the CUDA tests, fold 4 of the
# cross-validation with the default (GPU) recipe, then gpu.sh's benchmarks in the time left. Run from anywhere,
# OUT naming the folder for the results:
#
#     OUT=/path/to/results bash benchmarks/gpu_session.sh
#
# It needs two ignored folders beside the checkout, made on a machine with network:
#   .whl/       wheels of what the GPU machine's Python lacks, all pure Python: `pip download --no-deps -d .whl
#               monai==1.6.1 pytorch-ignite==0.5.5 nibabel==5.4.2`; installed offline into $SITE (default
#               /tmp/site) and put on PYTHONPATH with the checkout;
#   .gpu_data/  the dev256 slices: `python benchmarks/pack_slices.py pack ../shared/data/figshare-dev256
#               .gpu_data/dev256` (44 MB; masks and the validation fold exact).
# Each stage runs under `timeout` inside one deadline (GPU_SESSION_SECONDS, default 570), and a stage that
# fails does not stop the next. Without CUDA (a dry run) the benchmarks are skipped and crossval trains a tiny
# network for one epoch. OUT receives session.log (everything), benchmarks.jsonl (gpu.sh's JSON lines),
# crossval.log (its output: a line per epoch, the table once scored) and results.tar.gz (crossval's small
# files, the test report, nvidia-smi and pip list).
set -uo pipefail  # no -e: a failed stage is reported and the session goes on
cd "$(dirname "$0")/.."

DEADLINE=$((SECONDS + ${GPU_SESSION_SECONDS:-570}))
OUT=${OUT:-gpu_session_out}
WORK=${WORK:-/tmp/gpu_session}
SITE=${SITE:-/tmp/site}
DATA=$WORK/figshare-dev256
mkdir -p "$OUT" "$WORK/results"
exec > >(tee "$OUT/session.log") 2>&1
TEE=$!
export PYTHONUNBUFFERED=1

left() { echo $((DEADLINE - SECONDS)); }
# limit CAP RESERVE: a stage's seconds, CAP at most, leaving RESERVE seconds for the stages after it.
limit() { local rest=$(($(left) - $2)); echo $((rest < $1 ? (rest > 0 ? rest : 1) : $1)); }
section() { printf '\n======== %s (%d s left) ========\n' "$1" "$(left)"; }
status() { echo "-------- $1: exit $2"; }

section "machine"
# gpu.sh calls `python`; make it the Python that holds PyTorch (python3 there), whatever PATH says.
mkdir -p "$WORK/bin" && printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" >"$WORK/bin/python"
chmod +x "$WORK/bin/python" && export PATH="$WORK/bin:$PATH"
timeout 30 nvidia-smi 2>&1 | tee "$WORK/results/nvidia-smi.txt"
echo "$(nproc) CPU cores; $(python --version)"
df -h /dev/shm /tmp  # the loader workers pass batches through /dev/shm

section "wheels, offline into $SITE"
timeout 90 python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    .whl/*.whl
status wheels $?
export PYTHONPATH="$SITE:$PWD"  # the checkout too: benchmarks/*.py import pipeline without an install
export PIP_NO_INDEX=1  # any later install fails at once instead of waiting on a network that is not there
CUDA=$(timeout 60 python -c "import sys, torch, monai, ignite, nibabel, pipeline
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__, 'ignite',
      ignite.__version__, 'nibabel', nibabel.__version__, file=sys.stderr)
print(int(torch.cuda.is_available()))") || CUDA=0
echo "CUDA available: $CUDA"

section "data: unpack the dev256 slices into $DATA"
timeout "$(limit 120 400)" python benchmarks/pack_slices.py unpack .gpu_data/dev256 "$DATA" --workers "$(nproc)"
status unpack $?

section "CUDA tests"
# Every test whose behaviour depends on CUDA; without it they skip, or take their CPU branch.
timeout "$(limit 90 330)" python -m pytest -q -rs -p no:cacheprovider --disable-warnings \
    tests/test_unet.py tests/test_resume.py \
    tests/test_bundle.py -k "cuda or gpu" --junitxml "$WORK/results/cuda_tests.xml"
status tests $?

section "crossval --folds 4, default recipe"
# First of the long stages: the fold-4 Dice is the figure no CPU run can give. It leaves 150 s for gpu.sh.
# 100 epochs of whole 256 px slices, bf16, width 64-1024. Validation (613 slices, flip TTA, CPU post-processing)
# every 20 epochs instead of every epoch: it picks nothing (the fold's model is the last epoch's) but costs
# seconds each time. 12 loader workers augment on 16 cores, leaving the rest to the main process.
workers=$(($(nproc) > 4 ? $(nproc) - 4 : 1))
tiny=()
((CUDA)) || tiny=(--epochs 1 --image_size 64 --batch_size 4 --network_def#features "[4, 8, 16, 32, 64]")
# TERM to the whole process group at the limit (loader workers too); the epoch lines so far stay in the log.
timeout -k 10 "$(limit 600 150)" python -m pipeline crossval --src "$DATA" --meta "$DATA/meta.csv" --folds 4 \
    --out "$WORK/cv" --num_workers "$workers" --progress_bar false --val_interval 20 "${tiny[@]}" 2>&1 |
    tee "$OUT/crossval.log"
status crossval "${PIPESTATUS[0]}"
echo "reached: $(grep -oE 'epoch [0-9]+/[0-9]+' "$OUT/crossval.log" | tail -1)"

section "benchmarks (gpu.sh)"
if ((CUDA)); then
    # gpu.sh keeps its own limit per benchmark; the session's deadline cuts the last ones short.
    seconds=$(limit 240 25)
    GPU_SH_DEADLINE=$(($(date +%s) + seconds)) timeout -k 10 $((seconds + 20)) bash benchmarks/gpu.sh 2>&1 |
        tee "$WORK/benchmarks.log"
    status benchmarks "${PIPESTATUS[0]}"
else
    echo "no CUDA device: skipped" | tee "$WORK/benchmarks.log"
fi
grep '^{"benchmark"' "$WORK/benchmarks.log" >"$OUT/benchmarks.jsonl"

section "results"
timeout 30 python -m pip list 2>/dev/null >"$WORK/results/pip_list.txt"
# crossval's summaries, CSVs, learning curve and logs; not its checkpoints, masks or TensorBoard events.
timeout 30 tar -czf "$OUT/results.tar.gz" --exclude='*.pt' --exclude='*.nii.gz' --exclude='events.out.*' \
    -C "$WORK" results $(cd "$WORK" && ls -d cv 2>/dev/null)
ls -l "$OUT"
echo "session done in $((SECONDS - DEADLINE + ${GPU_SESSION_SECONDS:-570})) s"
exec >&- 2>&-
wait "$TEE" 2>/dev/null  # let tee finish session.log before the machine collects OUT
