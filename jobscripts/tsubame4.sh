#!/bin/bash
# CIFAR-10 on TSUBAME4.0 (Altair Grid Engine): VOGN on 16 GPUs (4 sample
# groups x 4 data shards), the Adam and MC-dropout baselines, then
# evaluate.py on the three runs. From the chainer-vogn folder, with the conda
# environment of docs/cluster.md built, set OUT and your group and submit:
#
#   qsub -g tga-xxx -v OUT=runs/lenet5 jobscripts/tsubame4.sh
#
# This one job runs the whole pipeline (RUN=all) and leaves the report and
# the ROC figure in $OUT/report. jobscripts/tsubame4_submit.sh instead runs
# the three trainings as jobs side by side and evaluates when they are done.
# After a time-out, submit the same command again: every training resumes
# from its newest snapshot (train.py --resume); finished ones end at once.
#
# The node count is the node_f request below (qsub -l node_f=N overrides it):
# P = 4 x N processes, one per GPU.
#$ -cwd
#$ -l node_f=4
#$ -l h_rt=24:00:00
#$ -N vogn-cifar10
#$ -j y
set -euo pipefail

# Settings: edit them here or pass them with qsub -v NAME=value,NAME=value.
OUT=${OUT:-}                  # required: folder of the runs and the report
RUN=${RUN:-all}               # vogn, adam, mcdropout, evaluate or all
SAMPLES=${SAMPLES:-4}         # VOGN sample groups S; P = S x D
ARCH=${ARCH:-lenet5}          # configs/cifar10_${ARCH}_{vogn,adam,mcdropout}.yaml
DATA_DIR=${DATA_DIR:-data}    # cifar-10-python.tar.gz (and SVHN's .mat files)
OOD=${OOD:-svhn}              # evaluate.py --ood
MC_SAMPLES=${MC_SAMPLES:-10}  # evaluate.py --mc-samples
PYTHON=${PYTHON:-~/miniforge3/envs/chainer-vogn/bin/python}
MODULES=${MODULES:-cuda cudnn nccl openmpi}  # pin versions: module avail cuda
GPUS_PER_NODE=${GPUS_PER_NODE:-4}  # a node_f has 4 H100 GPUs (a node_q 1)
NODES=${NHOSTS:-}             # set by Grid Engine: the nodes granted

: "${OUT:?set OUT to the output folder: qsub -g GROUP -v OUT=runs/lenet5 jobscripts/tsubame4.sh}"
: "${NODES:?NHOSTS is unset: submit with qsub -g GROUP -v OUT=$OUT jobscripts/tsubame4.sh}"
case $RUN in
  vogn | adam | mcdropout | evaluate | all) ;;
  *) echo "RUN=$RUN: expected vogn, adam, mcdropout, evaluate or all" >&2; exit 1 ;;
esac
NP=$((NODES * GPUS_PER_NODE))
if ((NP % SAMPLES != 0)); then
  echo "SAMPLES=$SAMPLES does not divide the $NP processes of $NODES nodes" >&2
  exit 1
fi
# The baselines run on D = P / S processes: the same D x batchsize examples
# per step as VOGN (the submit script passes SHARDS with fewer nodes).
SHARDS=${SHARDS:-$((NP / SAMPLES))}
if [[ ! -f train.py ]]; then
  echo "run from the chainer-vogn folder: cd there, then qsub (#$ -cwd)" >&2
  exit 1
fi
if [[ ! -x $PYTHON ]]; then
  echo "PYTHON=$PYTHON is not an interpreter: build the environment (docs/cluster.md) or set PYTHON" >&2
  exit 1
fi

# Batch shells may lack the module command; its scripts are not set -u safe.
set +u
# shellcheck source=/dev/null
type module &>/dev/null || . /etc/profile.d/modules.sh
# shellcheck disable=SC2086 # MODULES is a list of names
module load $MODULES
set -u

train() {  # train OPTIMIZER PROCESSES [more train.py options]
  local optimizer=$1 processes=$2
  shift 2
  mpirun -npernode "$GPUS_PER_NODE" -n "$processes" -x LD_LIBRARY_PATH -x PATH \
    "$PYTHON" train.py --config "configs/cifar10_${ARCH}_${optimizer}.yaml" \
    --data-dir "$DATA_DIR" --device 0 --communicator pure_nccl \
    --out "$OUT/$optimizer" --resume --no-progress "$@"
}

evaluate() {  # on the GPUs of one node, which share the Monte Carlo samples
  mpirun -npernode "$GPUS_PER_NODE" -n "$GPUS_PER_NODE" -x LD_LIBRARY_PATH -x PATH \
    "$PYTHON" evaluate.py "$OUT/vogn" "$OUT/adam" "$OUT/mcdropout" \
    --ood "$OOD" --mc-samples "$MC_SAMPLES" --data-dir "$DATA_DIR" \
    --device 0 --out "$OUT/report"
}

case $RUN in
  vogn) train vogn "$NP" --samples "$SAMPLES" ;;
  adam | mcdropout) train "$RUN" "$SHARDS" ;;
  evaluate) evaluate ;;
  all)
    train vogn "$NP" --samples "$SAMPLES"
    train adam "$SHARDS"
    train mcdropout "$SHARDS"
    evaluate
    ;;
esac
