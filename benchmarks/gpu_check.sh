#!/usr/bin/env bash
# Run ON THE GPU MACHINE from the repository root, with .gpu_carry/ from benchmarks/gpu_prepare.sh:
# installs the carried wheels (no network, no dependencies) into a private folder, runs the CUDA
# tests, then the GPU benchmarks at short sizes. Everything goes to $OUT (default
# /tmp/focustune_gpu_check): environment.txt, steps.log, <step>.log, pytest_cuda.xml, <benchmark>.json.
# Each step has its own time limit (~8 minutes in all); a failing step does not stop the others.
# GPU_CHECK_STEPS="pytest_cuda trials_per_gpu" runs only those steps (after install).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/focustune_gpu_check}
PYTHON=${PYTHON:-python3}
CARRY=.gpu_carry
DATA=$CARRY/data
SITE=${SITE:-/tmp/focustune_site}
STEPS=${GPU_CHECK_STEPS:-"pytest_cuda trainer_throughput trials_per_gpu comparison_wall packed_trials gan_reuse"}
mkdir -p "$OUT" "$SITE"
export PYTHONPATH="$PWD/platform:$PWD/analysis:$SITE${PYTHONPATH:+:$PYTHONPATH}"

log() { echo "== $(date +%T) $*" | tee -a "$OUT/steps.log"; }
step() {  # step NAME LIMIT_S COMMAND...: run it if selected, log its exit status and last lines
    local name=$1 limit=$2
    shift 2
    [[ " $STEPS install " == *" $name "* ]] || return 0
    log "$name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    log "$name: exit $? after $((SECONDS - start)) s"
    tail -n 12 "$OUT/$name.log"
}
install_wheels() {  # pip into a private folder; a pure-Python wheel unzipped there works the same
    "$PYTHON" -m pip install --no-index --no-deps --quiet --target "$SITE" "$CARRY"/wheels/*.whl \
        || "$PYTHON" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
            "$SITE" "$CARRY"/wheels/*.whl
    "$PYTHON" -c "import pytorch_optimizer, medmnist; print('carried wheels import')"
}

{ date; nvidia-smi; "$PYTHON" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))"; nproc; free -g; } \
    > "$OUT/environment.txt" 2>&1
log "start; steps: install $STEPS"
export -f install_wheels
export PYTHON CARRY SITE
step install 60 bash -c install_wheels
step pytest_cuda 200 "$PYTHON" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider \
    --junitxml "$OUT/pytest_cuda.xml"
step trainer_throughput 90 "$PYTHON" benchmarks/trainer_throughput.py --data-dir "$DATA" \
    --models small_cnn,resnet18 --rounds 4 --compile --output "$OUT/trainer_throughput.json"
step trials_per_gpu 120 "$PYTHON" benchmarks/trials_per_gpu.py --data-dir "$DATA" --concurrency 1,2,4,8,16 \
    --trials-per-worker 2 --epochs 3 --output "$OUT/trials_per_gpu.json"
step comparison_wall 90 "$PYTHON" benchmarks/comparison_wall.py --data-dir "$DATA" --trials 4 --epochs 5 \
    --concurrency 8 --output "$OUT/comparison_wall.json"
step packed_trials 90 "$PYTHON" benchmarks/packed_trials.py --data-dir "$DATA" --packs 1,4,8 \
    --output "$OUT/packed_trials.json"
step gan_reuse 120 "$PYTHON" benchmarks/gan_reuse.py --data-dir "$DATA" --trials 6 --output "$OUT/gan_reuse.json"
log "done"
