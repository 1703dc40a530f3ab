#!/usr/bin/env bash
# Cloud TPU VM (one host or a multi-host pod slice): create it, install the project on every
# host, build a dataset into Cloud Storage, train on all hosts at once, delete it.
#
#   export TPU_NAME=avsep ZONE=us-central2-b ACCELERATOR=v4-32 BUCKET=gs://my-bucket
#   bash launch/tpu_vm.sh create
#   bash launch/tpu_vm.sh setup                       # clone + set-up + jax[tpu] on all hosts
#   bash launch/tpu_vm.sh prepare music/music21 gs://my-bucket/MUSIC   # once, from host 0
#   bash launch/tpu_vm.sh train configs/crn.py:full runs/crn_music [--config.x=y ...]
#   bash launch/tpu_vm.sh delete
#
# `train` runs `python -m avsep_jax.main --distributed` on every host (--worker=all);
# jax.distributed finds the slice's hosts itself. Data (TFDS data_dir) and the workdir
# (checkpoints, metrics, reports) live under $BUCKET, which every host reads and writes.
# DRY_RUN=1 prints the gcloud commands instead of running them.
#
# Environment: TPU_NAME, ZONE, ACCELERATOR (e.g. v4-8, v4-32, v5litepod-16), BUCKET (gs://...),
# TPU_VERSION (default tpu-ubuntu2204-base), REPO (default: this clone's origin URL),
# BRANCH (default main), PROJECT (default: gcloud's), JAX_VERSION (default: requirements.txt's).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,13p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
need() { for v in "$@"; do [ -n "${!v:-}" ] || { echo "tpu_vm.sh: set $v" >&2; exit 2; }; done; }

TPU_VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
BRANCH=${BRANCH:-main}
JAX_VERSION=${JAX_VERSION:-$(sed -n 's/^jaxlib==//p' requirements.txt)}
REPO=${REPO:-$(git remote get-url origin 2>/dev/null || true)}
project=(); [ -n "${PROJECT:-}" ] && project=(--project="$PROJECT")

run() {  # echo, then run unless DRY_RUN=1
  printf '+'; printf ' %q' "$@"; printf '\n'
  [ "${DRY_RUN:-0}" = 1 ] || "$@"
}
on_hosts() {  # on_hosts WORKER COMMAND: one shell command on the TPU's hosts
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${project[@]}" \
    --worker="$1" --command="$2"
}

command=$1; shift
case "$command" in
  create)
    need TPU_NAME ZONE ACCELERATOR
    run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" "${project[@]}" \
      --accelerator-type="$ACCELERATOR" --version="$TPU_VERSION" ;;
  setup)
    need TPU_NAME ZONE REPO
    on_hosts all "set -e; [ -d avsep_jax ] || git clone -q --branch $BRANCH $REPO avsep_jax; \
cd avsep_jax && git pull -q && bash launch/setup.sh && \
.venv/bin/pip install -q 'jax[tpu]==$JAX_VERSION' && \
.venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_devices())'" ;;
  prepare)
    need TPU_NAME ZONE BUCKET
    [ $# -ge 1 ] || usage
    dataset=$1; manual=${2:-}
    on_hosts 0 "cd avsep_jax && .venv/bin/python -m avsep_jax.data.prepare \
--dataset=$dataset --data_dir=$BUCKET/tensorflow_datasets${manual:+ --manual_dir=$manual}" ;;
  train|eval)
    need TPU_NAME ZONE BUCKET
    [ $# -ge 2 ] || usage
    config=$1; workdir=$2; shift 2
    extra=$(printf ' %q' "$@")
    on_hosts all "cd avsep_jax && .venv/bin/python -m avsep_jax.main --distributed \
--mode=$command --config=$config --workdir=$BUCKET/$workdir \
--config.dataset.data_dir=$BUCKET/tensorflow_datasets$extra" ;;
  delete)
    need TPU_NAME ZONE
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" "${project[@]}" --quiet ;;
  *) usage ;;
esac
