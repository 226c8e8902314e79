# lorastream — `make demo` and `make test` work on a fresh clone: they build what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_DIR := .cache/kafka
KAFKA_STAMP := $(KAFKA_DIR)/.stamp
VENV_STAMP := $(VENV)/.stamp

.PHONY: venv kafka-jars test test-fast demo land bench gpu-wheels clean help

help:
	@echo "make demo   - the land's base and three adapters answering side by side through the embedded broker"
	@echo "make test   - the whole suite (starts a real Apache Kafka from Maven Central jars)"
	@echo "make land   - LoRA Land in miniature: two bases x six tasks fine-tuned through Kafka, a larger few-shot base, one mixed run, report"
	@echo "make bench  - the engine, cache, kafka and train benchmarks; writes docs/bench/*.json|png and docs/benchmarks.md"
	@echo "make gpu-wheels - the wheels bench/gpu_check.sh carries to a bare GPU image, into .whl/ (see its header)"

$(VENV_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV_STAMP)

$(KAFKA_STAMP): tools/kafka/pom.xml
	mkdir -p $(KAFKA_DIR)
	mvn -q -B -f tools/kafka/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA_DIR))/libs
	touch $@

kafka-jars: $(KAFKA_STAMP)

test: $(VENV_STAMP) $(KAFKA_STAMP)
	LORASTREAM_KAFKA_LIBS=$(abspath $(KAFKA_DIR))/libs $(BIN)/python -m pytest -q tests

demo: $(VENV_STAMP)
	$(BIN)/lorastream demo

land: $(VENV_STAMP)
	$(BIN)/lorastream land

# bench/ is development-only (not in the wheel, so not on an installed path): run it from the checkout
bench: $(VENV_STAMP)
	$(BIN)/python -m cli bench all --out docs/bench

# The packages the device image lacks (bench/gpu_wheels.py pins them), for CPython 3.12 manylinux
# x86_64, into .whl/ (git-ignored); fails if they and the working tree exceed a device call's 64 MiB.
gpu-wheels: $(VENV_STAMP)
	$(BIN)/python -m bench.gpu_wheels download --dest .whl

clean:
	rm -rf $(VENV) .cache
