#!/usr/bin/env bash
# Several GPU (or CPU) machines without a scheduler: start one process per machine over ssh,
# process 0 on the first host acting as jax.distributed's coordinator.
#
#   HOSTS="gpu1 gpu2" bash launch/ssh_nodes.sh configs/crn.py:full runs/crn_music [--config.x=y ...]
#
# Each host needs the project at $REMOTE_DIR (default: avsep_jax in the login directory), set up
# with `bash launch/setup.sh` and the CUDA jax build (README, Accelerators), and the same
# dataset and workdir paths: a shared file system, or gs:// paths. Each process uses all GPUs of
# its host. Output of process k goes to $LOG_DIR/process_k.log (default logs/). DRY_RUN=1 prints
# the ssh commands instead of running them. PORT (default 12355) is the coordinator's port.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${HOSTS:-}" ] || [ $# -lt 2 ]; then sed -n '2,11p' "$0" >&2; exit 2; fi
read -r -a hosts <<< "$HOSTS"
config=$1; workdir=$2; shift 2
extra=$(printf ' %q' "$@")
port=${PORT:-12355}
remote_dir=${REMOTE_DIR:-avsep_jax}
log_dir=${LOG_DIR:-logs}
mkdir -p "$log_dir"
pids=()
for i in "${!hosts[@]}"; do
  remote="cd $remote_dir && .venv/bin/python -m avsep_jax.main --config=$config \
--workdir=$workdir --coordinator_address=${hosts[0]}:$port --num_processes=${#hosts[@]} \
--process_id=$i$extra"
  printf '+ ssh %q %q\n' "${hosts[$i]}" "$remote"
  if [ "${DRY_RUN:-0}" != 1 ]; then
    ssh "${hosts[$i]}" "$remote" > "$log_dir/process_$i.log" 2>&1 &
    pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
