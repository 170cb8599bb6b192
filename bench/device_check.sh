#!/usr/bin/env bash
# One-command accelerator check (issue 14): the loop, study, GAN-training, DDPM and classifier-
# members benchmarks, each under its own time budget (about 9 minutes in all), merged into one
# JSON + Markdown table.
#
#   bash bench/device_check.sh              # on a GPU/TPU host: full settings
#   bash bench/device_check.sh --smoke      # tiny settings (a CPU check that everything runs)
#   bash bench/device_check.sh --dry-run    # print the commands only
#
# Environment: PYTHON (default python3); JAXSYNTH_TORCH_PYTHON (PyTorch interpreter for the
# twins; default: $PYTHON, skipped when it has no torch); OUT (default bench/results/device_check);
# PEAK_TFLOPS (device peak for MFU; default: measured matmul peak). A host with only the
# project's wheels: put them in .whl/ and this script installs them into .site/ first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/bench/results/device_check}"
DRY=0
SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --smoke) SMOKE=1 ;;
    -h | --help)
      sed -n '2,12p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "device_check.sh: unknown argument '$arg' (--dry-run | --smoke)" >&2
      exit 2
      ;;
  esac
done

cd "$ROOT"
if [[ -d .whl ]] && ! "$PYTHON" -c "import flax, grain, clu, orbax.checkpoint" 2>/dev/null; then
  if [[ $DRY -eq 0 ]]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target .site .whl/*.whl
  fi
  export PYTHONPATH="$ROOT/.site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
TORCH_PY="${JAXSYNTH_TORCH_PYTHON:-$PYTHON}"
if [[ $DRY -eq 0 ]] && ! "$TORCH_PY" -c "import torch" 2>/dev/null; then
  TORCH_PY=""
fi
TORCH_DEVICE=cpu
if [[ $DRY -eq 0 && -n "$TORCH_PY" ]] && "$TORCH_PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  TORCH_DEVICE=cuda
  export JAXSYNTH_NO_XLA_FLAGS=1 # jaxsynth's XLA flags are for XLA:CPU only
fi
PEAK=(--peak-tflops "${PEAK_TFLOPS:-0}")

if [[ $SMOKE -eq 1 ]]; then
  LOOP=(--models tiny --steps 5)
  STUDY=(--config rare_tumour:smoke --override=--config.generators="('dcgan',)")
  TRAIN=(--models dcgan --sizes 32 --batch 8 --steps 1 --torch-modes eager)
  DDPM=(--image-size 16 --batch 4 --base 8 --train-steps 1 --warmup 1 --ddim-steps 2 --timesteps 10 --sample-batch 2)
  MEMBERS=(--members "1,2" --epochs 1 --sizes "64,96" --val 64)
  BUDGET=(240 600 240 240 240)
else
  LOOP=(--models "tiny,dcgan64")
  STUDY=(--config rare_tumour)
  TRAIN=(--models "dcgan,cgan,wgan_gp" --sizes "64,128" --batch 64 --steps 50 --torch-modes "eager,compile")
  DDPM=(--batch 64 --train-steps 50 --warmup 3 --sample-batch 64 --torch-compile)
  MEMBERS=(--members "1,16" --epochs 2)
  BUDGET=(110 170 130 60 70)
fi

[[ $DRY -eq 1 ]] || mkdir -p "$OUT"
run() { # run NAME SECONDS CMD...: a failure or timeout is recorded, the check goes on
  local name="$1" budget="$2"
  shift 2
  echo "== $name (budget ${budget}s): $*"
  if [[ $DRY -eq 1 ]]; then
    return 0
  fi
  local start rc=0
  start=$(date +%s)
  timeout "$budget" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  echo "{\"name\": \"$name\", \"rc\": $rc, \"wall_s\": $(($(date +%s) - start))}" >"$OUT/$name.status.json"
  tail -n 15 "$OUT/$name.log"
}

run loop_bench "${BUDGET[0]}" "$PYTHON" bench/loop_bench.py "${LOOP[@]}" "${PEAK[@]}" \
  --out "$OUT/loop_bench.json"
run study_bench "${BUDGET[1]}" "$PYTHON" bench/study_bench.py "${STUDY[@]}" \
  --out "$OUT/study_bench.json"
run train_bench "${BUDGET[2]}" "$PYTHON" bench/train_bench.py "${TRAIN[@]}" \
  --torch-python "$TORCH_PY" --torch-device "$TORCH_DEVICE" --out "$OUT/train_bench.json"
run ddpm_bench "${BUDGET[3]}" "$PYTHON" bench/ddpm_bench.py "${DDPM[@]}" \
  --torch-python "$TORCH_PY" --torch-device "$TORCH_DEVICE" --out "$OUT/ddpm_bench.json"
run members_bench "${BUDGET[4]}" "$PYTHON" bench/members_bench.py "${MEMBERS[@]}" \
  --out "$OUT/members_bench.json"

if [[ $DRY -eq 0 ]]; then
  "$PYTHON" bench/device_check_report.py "$OUT"
fi
