#!/usr/bin/env bash
# Run HERE (a machine with the network and the data), before a GPU session: gathers into .gpu_carry/
# (git-ignored, ~5 MB) what benchmarks/gpu_check.sh needs on the GPU machine, which has Python,
# PyTorch, torchvision, scikit-learn, pandas and pytest but no network, Ray, Optuna, MLflow,
# medmnist or pytorch-optimizer:
#   wheels/  pytorch-optimizer (SAM: mdgan, the SAM test) and medmnist (MedMNIST metadata for
#            load_dataset, the usual loop of trainer_throughput.py), both pure Python, no dependencies pulled
#   data/    pneumoniamnist.npz and breastmnist.npz (the GPU benchmarks; the CUDA tests use generated data only)
# Then, on the GPU machine: bash benchmarks/gpu_check.sh   (carrying the path .gpu_carry)
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
PYTHON=${PYTHON:-python3}
DATA_DIR=${DATA_DIR:-../shared/data/medmnist}
WHEELS=("pytorch-optimizer==4.1.0" "medmnist==3.0.2")  # the versions this project's CPU runs use

mkdir -p "$CARRY/wheels" "$CARRY/data"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$CARRY/wheels" "${WHEELS[@]}"
cp -f "$DATA_DIR/pneumoniamnist.npz" "$DATA_DIR/breastmnist.npz" "$CARRY/data/"
ls -l "$CARRY/wheels" "$CARRY/data"
du -sh "$CARRY"
