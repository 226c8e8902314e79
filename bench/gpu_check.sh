#!/usr/bin/env bash
# The device check of issue 3 §7, as one short prepared run on a CUDA machine (the `device` tool):
# the Triton kernel tests and the CUDA engine test against PEFT, then `python -m bench.gpu`
# (~1B random Llama, bf16, batch 128, 1/32/128 distinct adapters). Everything lands in $OUT.
#
# The device image has torch, transformers, peft, triton, pytest and matplotlib, but not this
# project's Kafka-side packages, which the test conftest imports. Carry them as wheels, from the
# repo root here (Python 3.12 there):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl msgspec aiokafka orjson
#   python3 -m pip download --no-deps -d .whl async-timeout   # aiokafka's pure-Python dependency
# Then: run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540).
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
timeout 180 $PY -m pytest -q -p no:cacheprovider tests/engine/test_engine_triton.py 2>&1 | tee "$OUT/triton-tests.txt"
timeout 330 $PY -m bench.gpu --json "$OUT/gpu.json" --plot "$OUT/gpu.png" 2>&1 | tee "$OUT/gpu-bench.txt"
echo "results in $OUT"
