#!/usr/bin/env bash
# Runs main.py as N processes of one JAX multi-process run on this machine, the way a cluster
# launcher would: each process gets JAX_COORDINATOR_ADDRESS (a free local port), JAX_NUM_PROCESSES
# and JAX_PROCESS_ID; its lines are prefixed with [i]. The exit status is the first failure's.
#
#   scripts/launch_local.sh 2 --config configs/kadid_fr.py --workdir runs/kadid
#   # on a CPU, 2 fake devices per process:
#   JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 scripts/launch_local.sh 2 ...
#
# On a GPU host, one process per GPU: GPUS_PER_PROCESS=1 gives process i CUDA_VISIBLE_DEVICES=i
# (a single process over all GPUs is simpler there; this is for multi-host rehearsals).
set -uo pipefail
if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 N [main.py flags...]" >&2
  exit 2
fi
n=$1
shift
cd "$(dirname "$0")/.."
port=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < n; i++)); do
  (
    export JAX_COORDINATOR_ADDRESS="localhost:$port" JAX_NUM_PROCESSES="$n" JAX_PROCESS_ID="$i"
    if [[ -n "${GPUS_PER_PROCESS:-}" ]]; then
      export CUDA_VISIBLE_DEVICES=$(seq -s, $((i * GPUS_PER_PROCESS)) $(((i + 1) * GPUS_PER_PROCESS - 1)))
    fi
    exec "${PYTHON:-python3}" main.py "$@"
  ) > >(sed -u "s/^/[$i] /") 2> >(sed -u "s/^/[$i] /" >&2) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid"
  code=$?
  if [[ $code -ne 0 && $status -eq 0 ]]; then status=$code; fi
done
exit $status
