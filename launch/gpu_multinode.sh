#!/usr/bin/env bash
# Start ONE jaxsynth process on this node of a multi-node GPU job (run it once on every node).
#
# The process sees all of this node's GPUs; jax.distributed joins the nodes through a
# coordinator (process 0's host:port). jaxsynth reads the three variables below in one place
# (jaxsynth/train/mesh.py: maybe_initialize_distributed) before anything touches a GPU.
#
# Usage:
#   launch/gpu_multinode.sh [--coordinator HOST:PORT] [--num-processes N] [--process-id I]
#                           [--local-device-ids 0,1,..] [--] [jaxsynth arguments...]
# Each flag falls back to its environment variable:
#   JAX_COORDINATOR_ADDRESS  host:port of process 0 (reachable from every node; port free)
#   JAX_NUM_PROCESSES        number of processes (= nodes)
#   JAX_PROCESS_ID           this node's process id, 0..N-1 (0 must run on the coordinator host)
#   JAX_LOCAL_DEVICE_IDS     optional: GPUs this process drives (default: all visible)
# Under SLURM (SLURM_PROCID set, started by launch/slurm.sbatch) unset values come from
# SLURM_NTASKS / SLURM_PROCID, and JAXSYNTH_PER=node|gpu picks the GPUs of each process.
# The jaxsynth arguments default to nothing; give e.g.
#   train --config configs/dcgan.py --workdir /shared/runs/dcgan
# The workdir must be on storage every node sees (NFS, Lustre, a GCS/S3 FUSE mount): process 0
# writes the checkpoints, every process restores from them.
# JAXSYNTH (default: jaxsynth) is the command to run; DRY_RUN=1 prints instead of running.
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_multinode.sh: $*" >&2; exit 2; }

coordinator="${JAX_COORDINATOR_ADDRESS:-}"
num_processes="${JAX_NUM_PROCESSES:-${SLURM_NTASKS:-}}"
process_id="${JAX_PROCESS_ID:-${SLURM_PROCID:-}}"
local_device_ids="${JAX_LOCAL_DEVICE_IDS:-}"

while [ $# -gt 0 ]; do
  case "$1" in
    --coordinator) coordinator="${2:?--coordinator needs HOST:PORT}"; shift 2 ;;
    --num-processes) num_processes="${2:?--num-processes needs N}"; shift 2 ;;
    --process-id) process_id="${2:?--process-id needs I}"; shift 2 ;;
    --local-device-ids) local_device_ids="${2:?--local-device-ids needs a list}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done

[ -n "$coordinator" ] || die "no coordinator: set JAX_COORDINATOR_ADDRESS or --coordinator HOST:PORT"
case "$coordinator" in
  *:[0-9]*) ;;
  *) die "coordinator '$coordinator' is not HOST:PORT" ;;
esac
[[ "$num_processes" =~ ^[1-9][0-9]*$ ]] || die "JAX_NUM_PROCESSES / --num-processes '$num_processes' is not a positive integer"
[[ "$process_id" =~ ^[0-9]+$ ]] || die "JAX_PROCESS_ID / --process-id '$process_id' is not an integer"
[ "$process_id" -lt "$num_processes" ] || die "process id $process_id is not below the process count $num_processes"

# Which GPUs this process drives. Without SLURM jax uses every visible GPU. Under SLURM jax would
# pick only GPU SLURM_LOCALID, which is wrong for one process per node: say so explicitly.
if [ -z "$local_device_ids" ] && [ -n "${SLURM_PROCID:-}" ]; then
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a visible <<<"$CUDA_VISIBLE_DEVICES"
    gpu_count="${#visible[@]}"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    gpu_count="$(nvidia-smi -L | wc -l)"
  else
    gpu_count=0
  fi
  if [ "${JAXSYNTH_PER:-node}" = gpu ]; then
    # One process per GPU: the GPU of this local rank (index 0 when SLURM shows only one).
    if [ "$gpu_count" -eq 1 ]; then local_device_ids=0; else local_device_ids="${SLURM_LOCALID:-0}"; fi
  elif [ "$gpu_count" -gt 0 ]; then
    local_device_ids="$(seq -s, 0 $((gpu_count - 1)))"
  fi
fi

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

env_args=(
  "JAX_COORDINATOR_ADDRESS=$coordinator"
  "JAX_NUM_PROCESSES=$num_processes"
  "JAX_PROCESS_ID=$process_id"
)
if [ -n "$local_device_ids" ]; then env_args+=("JAX_LOCAL_DEVICE_IDS=$local_device_ids"); fi

echo "gpu_multinode.sh: process $process_id of $num_processes, coordinator $coordinator${local_device_ids:+, GPUs $local_device_ids}" >&2
run env "${env_args[@]}" "${JAXSYNTH:-jaxsynth}" "$@"
