#!/bin/bash
# Submits the CIFAR-10 pipeline to TSUBAME4.0 as four jobs of
# jobscripts/tsubame4.sh: VOGN on NODES node_f nodes, Adam and MC dropout
# side by side on D = 4 x NODES / SAMPLES GPUs each, and evaluate.py on one
# node, held until the three have ended (-hold_jid). On a login node, from
# the chainer-vogn folder:
#
#   GROUP=tga-xxx OUT=runs/lenet5 jobscripts/tsubame4_submit.sh
#
# The report and the ROC figure land in $OUT/report. If a training did not
# finish (a time-out), evaluate.py stops saying so: once the jobs have ended,
# run the same command again, and every training resumes from its newest
# snapshot. ARCH, DATA_DIR, OOD, MC_SAMPLES, PYTHON and MODULES, when set,
# are passed on to the jobs (see jobscripts/common.sh). NODES (default 4),
# SAMPLES, WALLTIME (per training, TSUBAME's limit is 24:00:00) and
# EVAL_WALLTIME set the jobs' sizes.
set -euo pipefail

GROUP=${GROUP:-}                      # required: your TSUBAME group (qsub -g)
NODES=${NODES:-4}                     # nodes of the VOGN job: P = 4 x NODES
GPUS_PER_NODE=4
RESOURCE=${RESOURCE:-node_f}          # the whole-node resource of qsub -l
JOB_SCRIPT=${JOB_SCRIPT:-jobscripts/tsubame4.sh}
USAGE="GROUP=tga-xxx OUT=runs/lenet5 ${SUBMIT_SCRIPT:-jobscripts/tsubame4_submit.sh}"

: "${GROUP:?set GROUP to your TSUBAME group: $USAGE}"
# Grid Engine jobs do not inherit this environment: pass on what is set.
passed=
for name in ARCH DATA_DIR OOD MC_SAMPLES PYTHON MODULES; do
  if [[ -n ${!name:-} ]]; then
    passed+=,$name=${!name}
  fi
done
[[ -f jobscripts/common.sh ]] || { echo "run from the chainer-vogn folder: the jobs start where qsub is run" >&2; exit 1; }
. jobscripts/common.sh
check_submission
vars=OUT=$OUT,SAMPLES=$SAMPLES,SHARDS=$SHARDS$passed

submit() {  # submit RUN NODES WALLTIME [JOB ID...]: prints the job id
  local run=$1 nodes=$2 walltime=$3 hold=() answer
  shift 3
  if (($#)); then
    hold=(-hold_jid "$(IFS=,; echo "$*")")
  fi
  answer=$(qsub -terse -g "$GROUP" -N "vogn-$run" -l "$RESOURCE=$nodes" -l "h_rt=$walltime" \
    -v "RUN=$run,$vars" "${hold[@]}" "$JOB_SCRIPT")
  job_id "$answer"
}

submit_pipeline
