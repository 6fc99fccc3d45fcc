#!/bin/bash
# Submits the CIFAR-10 pipeline to Slurm as four jobs of jobscripts/slurm.sh:
# VOGN on NODES nodes, Adam and MC dropout side by side on D = 4 x NODES /
# SAMPLES GPUs each, and evaluate.py on one node once all three have
# succeeded (--dependency=afterok). On a login node, from the chainer-vogn
# folder:
#
#   ACCOUNT=my-account OUT=runs/lenet5 jobscripts/slurm_submit.sh
#
# The report and the ROC figure land in $OUT/report. After a time-out, run the
# same command again: every training resumes from its newest snapshot (the
# evaluation job of the first submission is cancelled by Slurm, since its
# dependency can no longer be met). The jobs inherit this environment, so
# ARCH, DATA_DIR, OOD, MC_SAMPLES, PYTHON, MODULES... reach jobscripts/slurm.sh.
set -euo pipefail

ACCOUNT=${ACCOUNT:-}                  # required: the account to charge (sbatch --account)
OUT=${OUT:-}                          # required: folder of the runs and the report
PARTITION=${PARTITION:-}              # sbatch --partition, if your cluster wants one
NODES=${NODES:-4}                     # nodes of the VOGN job: P = 4 x NODES
SAMPLES=${SAMPLES:-4}                 # VOGN sample groups S; P = S x D
WALLTIME=${WALLTIME:-24:00:00}        # per training job
EVAL_WALLTIME=${EVAL_WALLTIME:-02:00:00}

: "${ACCOUNT:?set ACCOUNT to your Slurm account: ACCOUNT=my-account OUT=runs/lenet5 jobscripts/slurm_submit.sh}"
: "${OUT:?set OUT to the output folder: ACCOUNT=my-account OUT=runs/lenet5 jobscripts/slurm_submit.sh}"
for walltime in "$WALLTIME" "$EVAL_WALLTIME"; do
  if [[ ! $walltime =~ ^[0-9]+:[0-5][0-9]:[0-5][0-9]$ ]]; then
    echo "walltime $walltime: expected HH:MM:SS" >&2
    exit 1
  fi
done
processes=$((4 * NODES))
if ((processes % SAMPLES != 0)); then
  echo "SAMPLES=$SAMPLES does not divide the $processes processes of NODES=$NODES" >&2
  exit 1
fi
if [[ ! -f train.py ]]; then
  echo "run from the chainer-vogn folder: the jobs start where sbatch is run" >&2
  exit 1
fi
shards=$((processes / SAMPLES))
options=(--parsable "--account=$ACCOUNT")
if [[ -n $PARTITION ]]; then
  options+=("--partition=$PARTITION")
fi

submit() {  # submit RUN NODES WALLTIME [sbatch options]: prints the job id
  local run=$1 nodes=$2 walltime=$3
  shift 3
  local id
  id=$(sbatch "${options[@]}" "--job-name=vogn-$run" "--nodes=$nodes" "--time=$walltime" \
    "--export=ALL,RUN=$run,OUT=$OUT,SAMPLES=$SAMPLES,SHARDS=$shards" "$@" jobscripts/slurm.sh)
  echo "${id%%;*}"  # --parsable prints ID or ID;CLUSTER
}

vogn=$(submit vogn "$NODES" "$WALLTIME")
adam=$(submit adam "$(((shards + 3) / 4))" "$WALLTIME")
mcdropout=$(submit mcdropout "$(((shards + 3) / 4))" "$WALLTIME")
evaluate=$(submit evaluate 1 "$EVAL_WALLTIME" \
  "--dependency=afterok:$vogn:$adam:$mcdropout" --kill-on-invalid-dep=yes)
echo "submitted vogn $vogn, adam $adam, mcdropout $mcdropout and evaluate $evaluate (runs when they succeed)"
echo "report: $OUT/report (squeue --me shows the jobs)"
