#!/bin/bash
# Submits the CIFAR-10 pipeline to TSUBAME3.0 as four jobs of
# jobscripts/tsubame3.sh: VOGN on NODES f_node nodes, Adam and MC dropout
# side by side on D = 4 x NODES / SAMPLES GPUs each, and evaluate.py on one
# node, held until the three have ended (-hold_jid). On a login node, from
# the chainer-vogn folder:
#
#   GROUP=tga-xxx OUT=runs/lenet5 jobscripts/tsubame3_submit.sh
#
# The report and the ROC figure land in $OUT/report. If a training did not
# finish (a time-out), evaluate.py stops saying so: once the jobs have ended,
# run the same command again, and every training resumes from its newest
# snapshot. ARCH, DATA_DIR, OOD, MC_SAMPLES, PYTHON and MODULES, when set,
# are passed on to the jobs (see jobscripts/tsubame3.sh).
set -euo pipefail

GROUP=${GROUP:-}                      # required: your TSUBAME group (qsub -g)
OUT=${OUT:-}                          # required: folder of the runs and the report
NODES=${NODES:-4}                     # f_nodes of the VOGN job: P = 4 x NODES
SAMPLES=${SAMPLES:-4}                 # VOGN sample groups S; P = S x D
WALLTIME=${WALLTIME:-24:00:00}        # per training job (TSUBAME's limit: 24 h)
EVAL_WALLTIME=${EVAL_WALLTIME:-02:00:00}

: "${GROUP:?set GROUP to your TSUBAME group: GROUP=tga-xxx OUT=runs/lenet5 jobscripts/tsubame3_submit.sh}"
: "${OUT:?set OUT to the output folder: GROUP=tga-xxx OUT=runs/lenet5 jobscripts/tsubame3_submit.sh}"
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
  echo "run from the chainer-vogn folder: the jobs start where qsub is run" >&2
  exit 1
fi
shards=$((processes / SAMPLES))

vars=OUT=$OUT,SAMPLES=$SAMPLES,SHARDS=$shards
for name in ARCH DATA_DIR OOD MC_SAMPLES PYTHON MODULES; do
  if [[ -n ${!name:-} ]]; then
    vars+=,$name=${!name}
  fi
done

submit() {  # submit RUN RESOURCE WALLTIME [qsub options]: prints the job id
  local run=$1 resource=$2 walltime=$3
  shift 3
  qsub -terse -g "$GROUP" -N "vogn-$run" -l "$resource" -l "h_rt=$walltime" \
    -v "RUN=$run,$vars" "$@" jobscripts/tsubame3.sh
}

vogn=$(submit vogn "f_node=$NODES" "$WALLTIME")
adam=$(submit adam "f_node=$(((shards + 3) / 4))" "$WALLTIME")
mcdropout=$(submit mcdropout "f_node=$(((shards + 3) / 4))" "$WALLTIME")
evaluate=$(submit evaluate f_node=1 "$EVAL_WALLTIME" -hold_jid "$vogn,$adam,$mcdropout")
echo "submitted vogn $vogn, adam $adam, mcdropout $mcdropout and evaluate $evaluate (held until they end)"
echo "report: $OUT/report (qstat shows the jobs)"
