#!/usr/bin/env bash
# Every GPU figure the README's Compute section leaves open, from one command on a CUDA machine:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: gpu-check-<UTC time>/
#
# Writes OUT_DIR/gpu_check.log (everything printed) and the JSON of each part. About 15 minutes on
# one H100-class GPU; the parts, in order:
#   1. compiled == eager on CUDA (tests/test_compile.py's CUDA cases: every learner, IWU, sampling);
#   2. every benchmark case: the learners, world model, rollouts and ADEPT epochs eager then compiled
#      (run.compile's CUDA default waits for these numbers: baselines/compile.py, AUTO_COMPILE), then
#      the other methods' cases (MOPO/COMBO, SynthER, Diffuser, ground truth) eager;
#   3. how several runs share the GPU (aggregate throughput of K = 1, 2, 4, 8 concurrent runs: the
#      evidence for runs_per_gpu);
#   4. the cost of the paper's grid on this GPU (benchmarks/estimate.py);
#   5. a 20k-step ADEPT-IQL run on a generated halfcheetah-random dataset (pi_D and the world model
#      fitted first, 20k steps each), eager and compiled, with its wall time and updates/s.
# Nothing here needs the internet. Set STEPS (default 300) for the benchmark cases' timed steps.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

section() { printf '\n==== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

section "device"
python -c "import torch; assert torch.cuda.is_available(), 'gpu_check.sh needs a CUDA device'; \
print(torch.cuda.get_device_name(0), 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

section "1. compiled == eager on CUDA"
python -m pytest -q -p no:cacheprovider tests/test_compile.py -k cuda

section "2. benchmark cases, eager and compiled"
CORE="iql_vs_reference world_model_update_b256 world_model_iwu_b1024 rollout_n1000_h10 adept_epoch_iql adept_epoch_sac"
python -m benchmarks.throughput --device cuda --steps "$STEPS" --compile both --learners iql sac td3bc bc cql \
    --cases $CORE --out "$OUT/throughput.json"
OTHER=$(python -c "from benchmarks.throughput import CASES; \
print(' '.join(sorted(set(CASES) - set('iql sac td3bc bc cql iql_vs_d3rlpy $CORE'.split()))))")
python -m benchmarks.throughput --device cuda --steps 50 --cases $OTHER --out "$OUT/throughput_other.json"

section "3. runs sharing one GPU"
python -m benchmarks.estimate --device cuda --sharing-sweep 1 2 4 8 --seconds 5

section "4. the paper's grid on this GPU"
python -m benchmarks.estimate --configfile config/config.yaml --device cuda --gpus 1 --runs-per-gpu 1 \
    --out "$OUT/estimate.json"

section "5. 20k-step ADEPT-IQL on a generated dataset"
DATA="$OUT/data/halfcheetah-random-n200000.hdf5"
python -m adept datasets generate --env halfcheetah --dataset random --size 200000 --seed 0 --out "$DATA"
python -m adept behavior-policy --data "$DATA" --env halfcheetah --seed 0 --out "$OUT/pi_D.pt" \
    --steps 20000 --device cuda --quiet
python -m adept world-model --data "$DATA" --env halfcheetah --dataset random --seed 0 --out "$OUT/world_model.pt" \
    --steps 20000 --device cuda --quiet
for compile in off on; do
    python -m adept train --method adept-iql --env halfcheetah --dataset random --data "$DATA" --source generated \
        --seed 0 --world-model "$OUT/world_model.pt" --behavior-policy "$OUT/pi_D.pt" --device cuda \
        --out-dir "$OUT/adept-iql-compile-$compile" --compile "$compile" --set run.steps=20000 --quiet
    python - "$OUT/adept-iql-compile-$compile/final.json" "$compile" <<'EOF'
import json, sys
final = json.load(open(sys.argv[1]))
print(f"ADEPT-IQL 20k steps, compile {sys.argv[2]}: {final['wall_time_s']:.0f} s wall "
      f"({final['updates_per_s']:.0f} steps/s incl. 4 evaluations; x50 = {final['wall_time_s'] * 50 / 60:.0f} min "
      f"per 1M steps) on {final['device']}")
EOF
done

section "done"
echo "log: $OUT/gpu_check.log"
