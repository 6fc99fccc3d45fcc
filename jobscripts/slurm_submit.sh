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
# NODES (default 4), SAMPLES, WALLTIME and EVAL_WALLTIME set the jobs' sizes.
set -euo pipefail

ACCOUNT=${ACCOUNT:-}                  # required: the account to charge (sbatch --account)
PARTITION=${PARTITION:-}              # sbatch --partition, if your cluster wants one
NODES=${NODES:-4}                     # nodes of the VOGN job: P = 4 x NODES
GPUS_PER_NODE=4
USAGE='ACCOUNT=my-account OUT=runs/lenet5 jobscripts/slurm_submit.sh'

: "${ACCOUNT:?set ACCOUNT to your Slurm account: $USAGE}"
[[ -f jobscripts/common.sh ]] || { echo "run from the chainer-vogn folder: the jobs start where sbatch is run" >&2; exit 1; }
. jobscripts/common.sh
check_submission
options=(--parsable "--account=$ACCOUNT")
if [[ -n $PARTITION ]]; then
  options+=("--partition=$PARTITION")
fi

submit() {  # submit RUN NODES WALLTIME [JOB ID...]: prints the job id
  local run=$1 nodes=$2 walltime=$3 after=() answer
  shift 3
  if (($#)); then
    after=("--dependency=afterok:$(IFS=:; echo "$*")" --kill-on-invalid-dep=yes)
  fi
  answer=$(sbatch "${options[@]}" "--job-name=vogn-$run" "--nodes=$nodes" "--time=$walltime" \
    "--export=ALL,RUN=$run,OUT=$OUT,SAMPLES=$SAMPLES,SHARDS=$SHARDS" "${after[@]}" jobscripts/slurm.sh)
  job_id "$answer"  # --parsable prints ID or ID;CLUSTER
}

submit_pipeline
