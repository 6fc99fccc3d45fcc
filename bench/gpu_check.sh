#!/usr/bin/env bash
# The GPU checks in one go, for a machine with an NVIDIA GPU:
#   1. install chainer 7.8.1, CuPy and the test tools into a virtual
#      environment (pip; offline from a folder of wheels when WHEELS is set);
#   2. pytest tests/test_gpu.py (the CuPy kernels against the CPU path);
#   3. bench/step_time.py --device 0, bench/kernel.py, bench/memory.py --device 0.
# Everything (logs, JSON, summary.txt) goes to $OUT, or ./gpu_check_out.
# Each part has a time limit, and the whole run stops before 5 minutes.
#
# Usage:  bash bench/gpu_check.sh
# Environment:
#   OUT       output folder (default ./gpu_check_out)
#   WHEELS    folder of wheels/sdists for an offline install (pip --no-index
#             --find-links); it must hold chainer 7.8.1 (sdist) and its
#             dependencies, numpy, scipy, pytest, the CuPy package and, to
#             build chainer, setuptools<82 and wheel
#   PYTHON    interpreter for the environment (default python3.11, python3.12
#             or python3, whichever is found first)
#   GPU_VENV  where the environment goes (default $TMPDIR/chainer-vogn-gpu);
#             it sees the system's packages, so a CuPy already there is used
#   CUPY      CuPy package to install (default cupy-cuda12x)
# Exit status: 0 when every part passed, 1 when one failed, 2 without a GPU.
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(mkdir -p "${OUT:-gpu_check_out}" && cd "${OUT:-gpu_check_out}" && pwd)
VENV=${GPU_VENV:-${TMPDIR:-/tmp}/chainer-vogn-gpu}
CUPY=${CUPY:-cupy-cuda12x}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3.12 ||
                   command -v python3)}
DEADLINE=290  # seconds; every part's limit is cut to end before this
FAILED=()

say() {
    echo "gpu_check: $*" | tee -a "$OUT/summary.txt"
}

# run NAME LIMIT COMMAND...: run COMMAND (a program or an exported function)
# with its output in $OUT/NAME.log, for at most LIMIT seconds (less if the
# deadline is nearer).
run() {
    local name=$1 limit=$2 left start rc
    shift 2
    left=$((DEADLINE - SECONDS))
    if ((left < limit)); then limit=$left; fi
    if ((limit <= 0)); then
        say "$name: not run, no time left"
        FAILED+=("$name")
        return 1
    fi
    start=$SECONDS
    timeout "$limit" bash -c '"$@"' "$name" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    if ((rc == 0)); then
        say "$name: ok ($((SECONDS - start)) s)"
        return 0
    fi
    if ((rc == 124)); then
        say "$name: FAILED, stopped after $limit s; see $OUT/$name.log"
    else
        say "$name: FAILED (exit $rc); see $OUT/$name.log"
    fi
    FAILED+=("$name")
    return 1
}

install() {
    local constraints pip_args=()
    case $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') in
        3.11) constraints=$REPO/requirements/py311.txt ;;
        *) constraints=$REPO/requirements/py312-numpy2.txt ;;
    esac
    if [[ -n ${WHEELS:-} ]]; then
        pip_args=(--no-index --find-links "$WHEELS")
    fi
    "$PYTHON" -m venv --system-site-packages "$VENV" &&
        PIP_CONSTRAINT=$constraints \
        PIP_BUILD_CONSTRAINT=$REPO/requirements/build.txt \
        PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$VENV/bin/python" -m pip install "${pip_args[@]}" \
        chainer==7.8.1 numpy scipy pytest "$CUPY"
}

# pytest exits 0 when every test is skipped; on a GPU machine that is a failure.
test_gpu() {
    "$VENV/bin/python" -m pytest -p no:cacheprovider -rs \
        --junitxml "$OUT/test_gpu.xml" tests/test_gpu.py || return
    ! grep -q 'skipped="[1-9]' "$OUT/test_gpu.xml"
}

# bench/kernel.py exits 0 with "skipped" when it finds no GPU.
kernel() {
    "$VENV/bin/python" bench/kernel.py --out "$OUT/kernel.json" || return
    ! grep -q '"skipped"' "$OUT/kernel.json"
}

main() {
    cd "$REPO" || exit 1
    export OUT VENV CUPY PYTHON REPO
    export -f install test_gpu kernel
    : >"$OUT/summary.txt"
    if ! command -v nvidia-smi >/dev/null; then
        say "no NVIDIA GPU: nvidia-smi is not installed; run this on a" \
            "machine with an NVIDIA GPU and its driver"
        exit 2
    fi
    if ! nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 ||
        ! nvidia-smi -L | grep -q '^GPU'; then
        say "no NVIDIA GPU: nvidia-smi lists none (see $OUT/nvidia-smi.txt)"
        exit 2
    fi
    say "$(nvidia-smi -L | head -n 1); python $PYTHON; output in $OUT"
    run install 100 install || exit 1
    if ! run cupy 30 "$VENV/bin/python" -c \
        'import cupy; cupy.show_config(); print(cupy.cuda.runtime.getDeviceCount(), "devices")'
    then
        say "CuPy cannot use the GPU: $(tail -n 1 "$OUT/cupy.log")"
        say "(cupy-cuda12x needs an NVIDIA driver and the CUDA 12 libraries;" \
            "see https://docs.cupy.dev/en/stable/install.html)"
        exit 1
    fi
    run test_gpu 60 test_gpu
    run step_time 100 "$VENV/bin/python" bench/step_time.py --device 0 \
        --steps 20 --warmup 3 --budget 20 --out "$OUT/step_time.json"
    run kernel 30 kernel
    run memory 45 "$VENV/bin/python" bench/memory.py --device 0 \
        --out "$OUT/memory.json"
    if ((${#FAILED[@]})); then
        say "failed: ${FAILED[*]} ($SECONDS s)"
        exit 1
    fi
    say "all passed ($SECONDS s)"
}

main "$@"
