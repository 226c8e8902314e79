#!/usr/bin/env bash
# The device check (issues 3 §7 and 19): one call on a bare GPU image, sized to leave room for a
# rerun inside the session's 15 minutes of device time (machine start included).
#
# Before the call, here, where pip reaches PyPI (once; .whl/ is git-ignored):
#   make gpu-wheels     # bitsandbytes + google-re2 for CPython 3.12 manylinux x86_64 (~42 MiB of
#                       # the 64 MiB a call carries; bench/gpu_wheels.py pins them and says why)
# The call (the `device` tool):
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=310)
# then fetch $OUT: check.log, environment.json, triton-tests.xml, cuda-tests.xml, gpu.json, gpu.png.
#
# Steps, each under `timeout` and all within GPU_CHECK_BUDGET_S (default 280 s); the first two stop
# the run when they fail, a failing test step is recorded and the run goes on to the benchmark:
#   wheels       .whl/ present, exactly the pinned wheels, tags fit this Python (else exit 2);
#                installed with pip --target into $GPU_CHECK_SITE and put on PYTHONPATH
#   environment  torch/triton/transformers/peft/bitsandbytes/Python/C compiler + Python.h/GPU/driver
#                printed and checked (bench/gpu_env.py; exit 3 on an unmet requirement)
#   triton-tests the SGMV kernels against the PyTorch reference (fp32, bf16, fp16 on CUDA) within a
#                bound from each dtype's roundoff (a planted wrong-slot bug fails it); split-K and
#                static-shape launches
#   cuda-tests   NF4 base on CUDA against PEFT; the engine on CUDA (Triton, paged KV) against PEFT;
#                CUDA-graph decode steps (padded buckets, LoRA inside) against eager and PEFT;
#                adapter uploads as one staged copy on a load stream the compute stream waits on; a
#                static-shape LoRA step replayed in a graph after the bank's layout changed.
#                On the device a skipped test fails the step (it would hide a missing GPU/library)
#   bench        python -m bench.gpu (~1B Llama, bf16, batch 128, 32 new tokens): paged vs slot
#                capacity at one KV budget, graph vs eager decode step, then up to 3 rounds of
#                tokens/s with 1/32/128 distinct adapters in what is left of the budget; gpu.json is
#                rewritten after each of these
#
# --dry-run (or GPU_CHECK_DRY_RUN=1), for CI on a CPU (tests/gpu_check/test_gpu_check_dry_run.py):
# the same steps with the packages the device image lacks made unimportable
# (tests/gpu_check/device_image); no wheel install (the environment step requires the carried
# packages, bench/gpu_wheels.py, to import); CPU expectations for the versions; the kernel tests under Triton's interpreter; the CUDA
# tests collected by name and required to be skipped; bench.gpu at a tiny size on the CPU.
# Environment: OUT (default: a temp dir), PY (default python3), GPU_CHECK_BUDGET_S, GPU_CHECK_SITE.
set -uo pipefail

DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
case "${1:-}" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "usage: bash bench/gpu_check.sh [--dry-run | --help]" >&2; exit 64 ;;
esac
OUT=${OUT:-$(mktemp -d)}
PY=${PY:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-280}
SITE=${GPU_CHECK_SITE:-/tmp/lorastream-gpu-site}
LOG="$OUT/check.log"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
: > "$LOG"
STEPS=()
FAILED=0

say() { echo "$*" | tee -a "$LOG"; }

# step NAME CAP_S COMMAND... : run COMMAND under min(CAP_S, what is left of the budget)
step() {
    local name=$1 cap=$2 left limit started rc
    shift 2
    left=$((BUDGET_S - SECONDS))
    limit=$((cap < left ? cap : left))
    if ((limit < 10)); then
        say "== $name: not run, the budget is spent"
        STEPS+=("$(printf '%-13s %-8s' "$name" "not run")")
        return 124
    fi
    say "== $name (limit ${limit} s; ${left} of ${BUDGET_S} s left) =="
    started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    STEPS+=("$(printf '%-13s rc=%-5s %4d s' "$name" "$rc" $((SECONDS - started)))")
    return "$rc"
}

summary() {
    say "== summary ($((SECONDS)) s of ${BUDGET_S} s; results in $OUT)"
    for line in "${STEPS[@]}"; do say "  $line"; done
}

die() {
    local code=$1
    shift
    say "GPU CHECK STOPPED: $*"
    summary
    exit "$code"
}

# judge NAME JUNIT_XML [--expect-skipped TEST]... : the step fails unless the run meets the mode's rule
judge() {
    local name=$1 xml=$2
    shift 2
    if [ ! -s "$xml" ]; then
        say "TEST RUN NOT ACCEPTED: $name wrote no report ($xml)"
        FAILED=1
        return
    fi
    $PY -m bench.gpu_env tests "$xml" "$MODE" "$@" 2>&1 | tee -a "$LOG"
    if [ "${PIPESTATUS[0]}" -ne 0 ]; then FAILED=1; fi
}

if [ "$DRY_RUN" = 1 ]; then
    MODE=--cpu
    export PYTHONPATH="$PWD/tests/gpu_check/device_image${PYTHONPATH:+:$PYTHONPATH}"
    say "gpu_check: DRY RUN on the CPU ($($PY -V 2>&1)), packages absent from the device image blocked"
    say "== wheels: not installed in a dry run; the environment step requires the carried packages to import"
else
    MODE=--cuda
    export TRITON_INTERPRET=0  # compiled kernels, whatever tests/conftest.py infers from /dev
    say "gpu_check: device run ($($PY -V 2>&1)), $(date -u +%FT%TZ)"
    step wheels 30 $PY -m bench.gpu_wheels check --dir .whl || die 2 "the carried wheels cannot be installed"
    step install 60 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || die 2 "pip could not install .whl/*.whl"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    nvidia-smi 2>&1 | tee -a "$LOG"
fi

step environment 90 $PY -m bench.gpu_env check "$MODE" --json "$OUT/environment.json" \
    || die 3 "a requirement is unmet (REQUIREMENT UNMET lines above); nothing else was run"

PYTEST=($PY -m pytest -q -rs -p no:cacheprovider -p no:asyncio)
step triton-tests 120 "${PYTEST[@]}" --junitxml="$OUT/triton-tests.xml" \
    tests/engine/test_engine_triton.py -k test_triton_ || FAILED=1
judge triton-tests "$OUT/triton-tests.xml"

NF4_CUDA=test_engine_nf4_devices::test_nf4_base_matches_peft_on_the_same_nf4_base[cuda]
ENGINE_CUDA=test_engine_triton::test_engine_on_cuda_with_triton_matches_peft
GRAPHS_CUDA=test_cuda_graphs::test_graph_decode_on_cuda_matches_eager_and_peft
UPLOAD_CUDA=test_lora_cuda::test_upload_is_one_staged_copy_on_the_load_stream_and_the_compute_stream_waits_for_it
LORA_GRAPH_CUDA=test_lora_cuda::test_static_shape_step_replays_in_a_cuda_graph_with_another_layout
step cuda-tests 150 "${PYTEST[@]}" --junitxml="$OUT/cuda-tests.xml" \
    "tests/engine/${NF4_CUDA/::/.py::}" "tests/engine/${ENGINE_CUDA/::/.py::}" \
    "tests/engine/${GRAPHS_CUDA/::/.py::}" "tests/engine/${UPLOAD_CUDA/::/.py::}" \
    "tests/engine/${LORA_GRAPH_CUDA/::/.py::}" || FAILED=1
judge cuda-tests "$OUT/cuda-tests.xml" --expect-skipped "$NF4_CUDA" --expect-skipped "$ENGINE_CUDA" \
    --expect-skipped "$GRAPHS_CUDA" --expect-skipped "$UPLOAD_CUDA" --expect-skipped "$LORA_GRAPH_CUDA"

left=$((BUDGET_S - SECONDS))
if [ "$DRY_RUN" = 1 ]; then
    BENCH_ARGS=(--shape tiny --device cpu --dtype float32 --batch-size 8 --distinct 1,4,8 --heavy-distinct 1,4
                --new-tokens 3 --rounds 2)
else
    BENCH_ARGS=(--new-tokens 32 --rounds 3)
fi
step bench $((left - 5)) $PY -m bench.gpu "${BENCH_ARGS[@]}" --time-budget-s $((left > 30 ? left - 20 : 10)) \
    --json "$OUT/gpu.json" --plot "$OUT/gpu.png" || FAILED=1

summary
if [ "$FAILED" -ne 0 ]; then
    say "GPU CHECK FAILED: see the steps above"
    exit 1
fi
say "GPU CHECK PASSED"
