#!/bin/bash
# CIFAR-10 on a Slurm cluster: VOGN on 16 GPUs (4 sample groups x 4 data
# shards), the Adam and MC-dropout baselines, then evaluate.py on the three
# runs. From the chainer-vogn folder, with the conda environment of
# docs/cluster.md built, set OUT and your account and submit:
#
#   OUT=runs/lenet5 sbatch --account=ACCOUNT jobscripts/slurm.sh
#
# This one job runs the whole pipeline (RUN=all) and leaves the report and
# the ROC figure in $OUT/report. jobscripts/slurm_submit.sh instead runs the
# three trainings as jobs side by side and evaluates when they succeeded.
# After a time-out, submit the same command again: every training resumes
# from its newest snapshot (train.py --resume); finished ones end at once.
#
# The node count is --nodes below (sbatch --nodes=N overrides it):
# P = 4 x N processes, one per GPU. Add --partition=... where needed.
#SBATCH --job-name=vogn-cifar10
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=4
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

# Settings: edit them here or set them in the environment of sbatch.
OUT=${OUT:-}                  # required: folder of the runs and the report
RUN=${RUN:-all}               # vogn, adam, mcdropout, evaluate or all
SAMPLES=${SAMPLES:-4}         # VOGN sample groups S; P = S x D
ARCH=${ARCH:-lenet5}          # configs/cifar10_${ARCH}_{vogn,adam,mcdropout}.yaml
DATA_DIR=${DATA_DIR:-data}    # cifar-10-python.tar.gz (and SVHN's .mat files)
OOD=${OOD:-svhn}              # evaluate.py --ood
MC_SAMPLES=${MC_SAMPLES:-10}  # evaluate.py --mc-samples
PYTHON=${PYTHON:-~/miniforge3/envs/chainer-vogn/bin/python}
MODULES=${MODULES:-cuda cudnn nccl openmpi}  # pin versions: module avail cuda
SRUN_MPI=${SRUN_MPI:-pmix}    # srun --mpi: the plugin your MPI was built for
GPUS_PER_NODE=4               # as --gpus-per-node above
NODES=${SLURM_JOB_NUM_NODES:-}  # set by Slurm: the nodes granted

: "${OUT:?set OUT to the output folder: OUT=runs/lenet5 sbatch --account=ACCOUNT jobscripts/slurm.sh}"
: "${NODES:?SLURM_JOB_NUM_NODES is unset: submit with OUT=$OUT sbatch --account=ACCOUNT jobscripts/slurm.sh}"
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
  echo "run from the chainer-vogn folder: cd there, then sbatch" >&2
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

launch() {  # launch PROCESSES COMMAND...: on as few nodes as hold them
  local processes=$1
  shift
  srun --mpi="$SRUN_MPI" --nodes="$(((processes + GPUS_PER_NODE - 1) / GPUS_PER_NODE))" \
    --ntasks="$processes" --ntasks-per-node="$GPUS_PER_NODE" "$@"
}

train() {  # train OPTIMIZER PROCESSES [more train.py options]
  local optimizer=$1 processes=$2
  shift 2
  launch "$processes" "$PYTHON" train.py \
    --config "configs/cifar10_${ARCH}_${optimizer}.yaml" \
    --data-dir "$DATA_DIR" --device 0 --communicator pure_nccl \
    --out "$OUT/$optimizer" --resume --no-progress "$@"
}

evaluate() {  # on the GPUs of one node, which share the Monte Carlo samples
  launch "$GPUS_PER_NODE" "$PYTHON" evaluate.py \
    "$OUT/vogn" "$OUT/adam" "$OUT/mcdropout" \
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
