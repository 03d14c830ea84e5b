#!/bin/bash
# The paper's protocol on a SLURM cluster: one array task per split (one GPU each), then a job that
# writes the table once every task has ended (ok or not: the table says which splits are missing).
#
#   scripts/slurm_protocol.sh CONFIG WORKDIR [SPLITS] [protocol or --config.* flags ...]
#   scripts/slurm_protocol.sh configs/kadid_fr.py runs/kadid 10 --config.data.root=/data/kadid10k
#
# Run it from the repository's root, in the Python environment the jobs should use. Site options
# (partition, account, ...) go in sbatch's environment variables, e.g. SBATCH_PARTITION=gpu,
# SBATCH_ACCOUNT=me; TIME (default 24:00:00) and CPUS (default 8) set the tasks' limits. Task k
# runs `python -m bpclip_jax.protocol ... --only k`: split k in WORKDIR/split_k (of every
# --variants), its output in WORKDIR/split_k/log.txt. GRACE seconds before its time limit (default
# 300), or when it is preempted, a task is sent SIGTERM: it checkpoints its step in flight, exits 75
# and requeues itself, and its next run resumes. Running this script again resubmits: done splits
# are only read, interrupted ones resume from their checkpoints.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [SPLITS] [flags ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
splits=10
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
  splits=$1
  shift
fi
flags=$(printf ' %q' "$@")
protocol="python -m bpclip_jax.protocol --config $(printf %q "$config") --workdir $(printf %q "$workdir") --splits $splits$flags"
mkdir -p "$workdir/slurm"

# SIGTERM GRACE seconds (default 300) before the time limit, and on preemption; the task then
# checkpoints, exits 75 and is requeued (scripts/requeue_on_preempt.sh): nothing is lost.
requeue=$(printf %q "$(cd "$(dirname "$0")" && pwd)/requeue_on_preempt.sh")
array=$(sbatch --parsable --job-name=bpclip-splits --array="0-$((splits - 1))" --gpus=1 \
  --cpus-per-task="${CPUS:-8}" --time="${TIME:-24:00:00}" --output="$workdir/slurm/split_%a.out" \
  --open-mode=append --requeue --signal="B:TERM@${GRACE:-300}" \
  --wrap="$requeue $protocol --only \$SLURM_ARRAY_TASK_ID")
table=$(sbatch --parsable --job-name=bpclip-table --dependency="afterany:${array%%;*}" --ntasks=1 \
  --time=00:30:00 --output="$workdir/slurm/table.out" --wrap="$protocol --aggregate_only")
echo "splits: job $array (array 0-$((splits - 1))); table: job $table, writes $workdir/table.md"
