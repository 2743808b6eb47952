#!/usr/bin/env bash
# GPU check: the main job's CUDA path end to end on the tiny consortium (MONAI imaging with batch norm,
# HPO, VCF, notes, labs) with FedBN + personalisation and SCAFFOLD + focal loss, and FLamby's heart
# protocol with FedAdam, all with trainer=gpu (bf16). Prints each run's table; exits non-zero on failure.
#   bash benchmarks/gpu_check.sh [data_dir] [heart_dir]
set -euo pipefail
data=${1:-/tmp/rarefed-gpu-data}
heart=${2:-../shared/data/heart}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
run() { echo "== $*"; local t0=$SECONDS; python3 scripts/train.py trainer=gpu progress=false paths.data_dir="$data" "$@"; echo "wall $((SECONDS - t0)) s"; }
run experiment=smoke federation=fedbn personalisation.enabled=true personalisation.epochs=1 hydra.run.dir=/tmp/gpu_run1
run experiment=smoke federation=scaffold model/loss=focal federation.participation.fraction=0.6 hydra.run.dir=/tmp/gpu_run2
run experiment=heart_flamby federation=fedadam federation.strategy.eta=0.1 "seeds=[0]" baselines.local=false data.root="$heart" hydra.run.dir=/tmp/gpu_run3
python3 - <<'PY'
import json
for run in ("/tmp/gpu_run1", "/tmp/gpu_run2", "/tmp/gpu_run3"):
    summary = json.load(open(f"{run}/summary.json"))
    print(run, {a: round(v[summary["metric_names"][0]], 3) for a, v in summary["overall"].items()})
PY
nvidia-smi --query-gpu=memory.used --format=csv
