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
# The settings (OUT, RUN, SAMPLES, ARCH, PYTHON, MODULES...) are those of
# jobscripts/common.sh, which holds the body of the job.
#
# The node count is the node_f request below (qsub -l node_f=N overrides it):
# P = 4 x N processes, one per GPU.
#$ -S /bin/bash
#$ -cwd
#$ -l node_f=4
#$ -l h_rt=24:00:00
#$ -N vogn-cifar10
#$ -j y
set -euo pipefail

# The module versions are assumptions to confirm with `module avail` on
# TSUBAME4.0 (docs/cluster.md); the preflight checks what they provide.
MODULES=${MODULES:-cuda/12.3.2 cudnn/8.9.7 nccl/2.20.5 openmpi/5.0.2-gcc}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}  # a node_f has 4 H100 GPUs (a node_q 1)
NODES=${NHOSTS:-}                  # set by Grid Engine: the nodes granted
NODES_FROM=NHOSTS
USAGE=${USAGE:-qsub -g GROUP -v OUT=runs/lenet5 jobscripts/tsubame4.sh}
LAUNCHER=mpirun
launch() {  # launch PROCESSES COMMAND...: GPUS_PER_NODE processes a node
  local processes=$1
  shift
  mpirun -npernode "$GPUS_PER_NODE" -n "$processes" -x LD_LIBRARY_PATH -x PATH "$@"
}

[[ -f jobscripts/common.sh ]] || { echo "run from the chainer-vogn folder: cd there, then qsub (#$ -cwd)" >&2; exit 1; }
. jobscripts/common.sh
run_job
