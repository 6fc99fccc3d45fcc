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
# The settings (OUT, RUN, SAMPLES, ARCH, PYTHON, MODULES...) are those of
# jobscripts/common.sh, which holds the body of the job.
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

SRUN_MPI=${SRUN_MPI:-pmix}    # srun --mpi: the plugin your MPI was built for
GPUS_PER_NODE=4               # as --gpus-per-node above
# srun does not inherit --cpus-per-task from sbatch (Slurm 22.05 and newer).
CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-4}
NODES=${SLURM_JOB_NUM_NODES:-}  # set by Slurm: the nodes granted
NODES_FROM=SLURM_JOB_NUM_NODES
USAGE='OUT=runs/lenet5 sbatch --account=ACCOUNT jobscripts/slurm.sh'
LAUNCHER=srun
launch() {  # launch PROCESSES COMMAND...: on as few nodes as hold them
  local processes=$1
  shift
  srun --mpi="$SRUN_MPI" --nodes="$(((processes + GPUS_PER_NODE - 1) / GPUS_PER_NODE))" \
    --ntasks="$processes" --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" "$@"
}

[[ -f jobscripts/common.sh ]] || { echo "run from the chainer-vogn folder: cd there, then sbatch" >&2; exit 1; }
. jobscripts/common.sh
run_job
