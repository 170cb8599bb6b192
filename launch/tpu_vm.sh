#!/usr/bin/env bash
# Train jaxsynth on a Cloud TPU VM (single host or a multi-host slice) from this checkout.
#
# Usage:
#   launch/tpu_vm.sh --name NAME --zone ZONE [--project P] \
#       [--create [--accelerator-type v4-16] [--version tpu-ubuntu2204-base] [--spot]] \
#       [--no-install] -- train --config configs/dcgan.py:paper --workdir gs://BUCKET/runs/dcgan
#
# Steps (each is one gcloud command; DRY_RUN=1 prints them instead of running them):
#   1. --create: `gcloud compute tpus tpu-vm create` (skip it for an existing TPU VM);
#   2. copy this checkout (`git archive HEAD`, so every worker runs the same commit) to every
#      worker and install it into ~/jaxsynth-venv with jax[tpu] (Python 3.11 through uv; the TPU
#      images ship 3.10); with a gs:// workdir also install gcsfuse (--no-install skips step 2);
#   3. `ssh --worker=all`: on every worker run `jaxsynth <args>` with JAXSYNTH_DISTRIBUTED=1, so
#      jax.distributed.initialize() finds the slice's hosts from the TPU metadata by itself.
# A gs://BUCKET/path workdir is mounted with gcsfuse at /mnt/jaxsynth-gcs/BUCKET on every worker
# (the engine writes plain files); a multi-host slice NEEDS such a shared workdir, because process
# 0 writes the checkpoints that every worker restores. A local workdir is fine on one host.
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

name="" zone="" project="" create=0 install=1 spot=0
accelerator="v4-8" version="tpu-ubuntu2204-base"
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --zone) zone="${2:?--zone needs a value}"; shift 2 ;;
    --project) project="${2:?--project needs a value}"; shift 2 ;;
    --create) create=1; shift ;;
    --accelerator-type) accelerator="${2:?--accelerator-type needs a value}"; shift 2 ;;
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --spot) spot=1; shift ;;
    --no-install) install=0; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (jaxsynth arguments go after --)" ;;
  esac
done
[ -n "$name" ] || die "--name is required"
[ -n "$zone" ] || die "--zone is required"
[ $# -gt 0 ] || die "give the jaxsynth arguments after --, e.g. -- train --config configs/dcgan.py --workdir gs://B/run"

# The workdir: gs://BUCKET/path -> the gcsfuse mount point on the workers.
args=("$@")
bucket=""
for i in "${!args[@]}"; do
  value="${args[$i]}"
  if [ "$value" = --workdir ] && [ $((i + 1)) -lt ${#args[@]} ]; then
    value="${args[$((i + 1))]}"
    i=$((i + 1))
  elif [[ "$value" == --workdir=* ]]; then
    value="${value#--workdir=}"
  else
    continue
  fi
  if [[ "$value" == gs://* ]]; then
    rest="${value#gs://}"
    bucket="${rest%%/*}"
    path=""
    if [[ "$rest" == */* ]]; then path="${rest#*/}"; fi
    local_path="/mnt/jaxsynth-gcs/$bucket${path:+/$path}"
    if [[ "${args[$i]}" == --workdir=* ]]; then args[i]="--workdir=$local_path"; else args[i]="$local_path"; fi
  fi
done

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
if [ -n "$project" ]; then where+=(--project="$project"); fi

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

if [ "$create" = 1 ]; then
  create_cmd=("${gcloud_tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator" --version="$version")
  if [ "$spot" = 1 ]; then create_cmd+=(--spot); fi
  run "${create_cmd[@]}"
fi

if [ "$install" = 1 ]; then
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  tarball="${TMPDIR:-/tmp}/jaxsynth-src.tar.gz"
  run git -C "$repo" archive --format=tar.gz -o "$tarball" HEAD
  run "${gcloud_tpu[@]}" scp "$tarball" "$name:jaxsynth-src.tar.gz" "${where[@]}" --worker=all
  setup='set -e
rm -rf ~/jaxsynth && mkdir -p ~/jaxsynth && tar -xzf ~/jaxsynth-src.tar.gz -C ~/jaxsynth
python3 -m pip install --user -q uv
~/.local/bin/uv venv -q --python 3.11 ~/jaxsynth-venv
~/.local/bin/uv pip install -q --python ~/jaxsynth-venv/bin/python -e ~/jaxsynth "jax[tpu]>=0.9.2,<0.11"'
  if [ -n "$bucket" ]; then
    # shellcheck disable=SC2016  # $(lsb_release -cs) is meant for the worker's shell
    setup+='
if ! command -v gcsfuse >/dev/null; then
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
  sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
fi'
  fi
  run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$setup"
fi

train="cd ~/jaxsynth"
if [ -n "$bucket" ]; then
  mount="/mnt/jaxsynth-gcs/$bucket"
  train+=" && sudo mkdir -p $mount && sudo chown \$USER $mount && (mountpoint -q $mount || gcsfuse --implicit-dirs $bucket $mount)"
fi
train+=" && JAXSYNTH_DISTRIBUTED=1 ~/jaxsynth-venv/bin/jaxsynth$(printf ' %q' "${args[@]}")"
run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$train"
