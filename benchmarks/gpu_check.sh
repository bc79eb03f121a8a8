#!/usr/bin/env bash
# Every GPU check of xbar in one command, for a CUDA machine that has torch but
# perhaps not xbar's other dependencies (run it from the repository root):
#
#   bash benchmarks/gpu_check.sh [OUTDIR]
#
# Wheels found in .whl/ (aihwkit 1.1.0 for the machine's Python, tomli-w,
# mlxtend) are installed into /tmp/site first; see docs/getting-started.md,
# "Checking a GPU". Each step's full output goes to OUTDIR/<step>.log (default
# $OUT, else gpu-check/), and its exit status and time are printed:
#   env          torch, CUDA device and aihwkit versions
#   cuda_tests   the CUDA tests (they skip without a GPU elsewhere)
#   train_step   benchmarks.train_step --device cuda (target <= 1.15x plain PyTorch)
#   monte_carlo  benchmarks.monte_carlo --skip-cpu, its CUDA section (>= 50x aihwkit,
#                >= 3x the plain loop, 10,000-instance KPP within 60 s)
#   distributed  the 2-process tests, and NCCL when the machine has 2 or more GPUs
# Each step has a time limit (seconds; with the install they fit one 10-minute call
# with a minute to spare): env 30, cuda_tests 60, train_step 120, monte_carlo 210,
# distributed 60. LIMIT=seconds replaces all of them. A step's stdout goes to
# OUTDIR/<step>.out (the JSON of the benchmarks, also copied to <step>.json) and its
# stderr to OUTDIR/<step>.err. Without aihwkit (the wheels not carried) it stops at once.
set -u
out_dir=${1:-${OUT:-gpu-check}}
mkdir -p "$out_dir"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
py=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_check: installing .whl/*.whl failed" >&2; exit 2; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
failed=0
step() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "${LIMIT:-$limit}" "$@" >"$out_dir/$name.out" 2>"$out_dir/$name.err"
    rc=$?
    echo "== $name: rc=$rc, $(($(date +%s) - start)) s"
    tail -n 4 "$out_dir/$name.out"
    [ "$rc" -eq 0 ] || { tail -n 6 "$out_dir/$name.err"; failed=1; }
    return "$rc"
}
step env 30 "$py" -c "import torch, aihwkit; print(torch.__version__, aihwkit.__version__, torch.cuda.get_device_name(0))" \
    || { echo "gpu_check: no aihwkit or no CUDA device (carry .whl/ with the aihwkit cp312 wheel); stopping" >&2; exit 2; }
step cuda_tests 60 "$py" -m pytest -q -p no:cacheprovider -k "cuda" tests
step train_step 120 "$py" -m benchmarks.train_step --device cuda
cp "$out_dir/train_step.out" "$out_dir/train_step.json" 2>/dev/null
step monte_carlo 210 "$py" -m benchmarks.monte_carlo --skip-cpu
cp "$out_dir/monte_carlo.out" "$out_dir/monte_carlo.json" 2>/dev/null
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "${gpus:-0}" -ge 2 ]; then
    step distributed 60 torchrun --nproc_per_node=2 -m benchmarks.nccl_check
else
    step distributed 60 "$py" -m pytest -q -p no:cacheprovider tests/test_distributed.py
    echo "   (one GPU: NCCL needs a GPU per process, so only the gloo tests ran)"
fi
exit "$failed"
