#!/bin/bash
# Runs a command so that a SLURM preemption or time limit loses nothing: SIGTERM (and SIGINT) to
# this script is passed to the command, which checkpoints and exits 75 (bpclip_jax.preempt); on
# exit 75 inside a SLURM job the job is requeued (`scontrol requeue`), and its rerun resumes.
#
#   scripts/requeue_on_preempt.sh python -m bpclip_jax.protocol ... --only 3
#
# Submit with `sbatch --signal=B:TERM@SECONDS --requeue` (scripts/slurm_protocol.sh does): SLURM
# then signals this batch script SECONDS before the time limit, and before a preemption as its
# PreemptMode allows. Exit code: the command's.
set -u
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while true; do
  wait "$child"
  code=$?
  kill -0 "$child" 2>/dev/null || break  # wait returned for a trapped signal: the command goes on
done
if [[ $code -eq 75 && -n "${SLURM_JOB_ID:-}" ]]; then
  echo "preempted: requeueing SLURM job $SLURM_JOB_ID; its next run resumes from the checkpoint" >&2
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$code"
