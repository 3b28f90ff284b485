# Entry points. `make train` and `make test` set up .venv themselves on a fresh clone (once).
#   make train EXP=mnist_lenet SET="train.epochs=2 train.batch_size=64" [RUN_DIR=runs/x]
#   make test | make test-slow | make tensorboard | make evaluate RUN=<run-dir> | make export RUN=<run-dir>

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)
EXP ?= cifar10_aug
SET ?=
RUN_DIR ?=
PORT ?= 6006

.PHONY: setup train test test-slow lint format tensorboard evaluate export clean-venv bench bench-quick bench-transfer

setup: $(STAMP)

# The stamp names the requirements' checksum: editing requirements.txt reinstalls.
$(STAMP): requirements.txt
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found; install Python 3.11" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

train: $(STAMP)
	$(BIN)/python -m pipeline train $(EXP) $(foreach s,$(SET),--set $(s)) $(if $(RUN_DIR),--run-dir $(RUN_DIR))

test: $(STAMP)
	$(BIN)/python -m pytest

# ruff (pinned in requirements.txt, settings in pyproject.toml): `make lint` checks, `make format` rewrites.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The slow tests start several TensorFlow processes each (workers, benchmarks): one at a time.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -n 0

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir runs --port $(PORT)

evaluate: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make evaluate RUN=runs/<experiment>/<time>" >&2; exit 2; }
	$(BIN)/python -m pipeline evaluate $(RUN)

export: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make export RUN=runs/<experiment>/<time>" >&2; exit 2; }
	$(BIN)/python -m pipeline export $(RUN)

clean-venv:
	rm -rf $(VENV)

# Dataset tools (python -m pipeline data ...): make data-check ROOT=data/myphotos ARGS="--quarantine data/bad"
#   data-label | data-check | data-stats | data-split ROOT=<folder> [ARGS="..."]
#   data-gather ROOT=<urls.txt> ARGS="--out data/new"   (URLS=<urls.txt> works too)
.PHONY: data-label data-check data-stats data-split data-gather

data-label data-check data-stats data-split: $(STAMP)
	@test -n "$(ROOT)" || { echo "usage: make $@ ROOT=<image folder> [ARGS=\"...\"]" >&2; exit 2; }
	$(BIN)/python -m pipeline data $(patsubst data-%,%,$@) $(ROOT) $(ARGS)

data-gather: $(STAMP)
	@test -n "$(or $(URLS),$(ROOT))" || { echo "usage: make data-gather ROOT=<urls.txt> ARGS=\"--out DIR\"" >&2; exit 2; }
	$(BIN)/python -m pipeline data gather $(or $(URLS),$(ROOT)) $(ARGS)

# Benchmarks (benchmarks/*.py; results appended to benchmarks/RESULTS.md). `make bench` is long (the last
# one trains 15 epochs twice); `make bench-quick` is a smoke run on small subsets that records nothing.
# requirements-bench.txt adds scipy (the Keras book recipe's ImageDataGenerator) to requirements.txt.
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cat requirements.txt requirements-bench.txt | cksum | cut -d' ' -f1)
BENCHMARKS := input_pipeline train_throughput compute_efficiency feature_cache time_to_accuracy

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	rm -f $(VENV)/.bench-installed-* && touch $@

bench: $(BENCH_STAMP)
	set -e; for name in $(BENCHMARKS); do $(BIN)/python -m benchmarks.$$name; done

bench-quick: $(BENCH_STAMP)
	set -e; for name in $(BENCHMARKS); do $(BIN)/python -m benchmarks.$$name --quick; done

# Data at any size (issue 13): phone photos it generates; peak RSS of `train tiny`, images/s against Keras'
# image_dataset_from_directory at 1x/2x/4x the files, scan files/s (~10 min on 2 cores; --quick: a smoke run).
.PHONY: bench-data
bench-data: $(STAMP)
	$(BIN)/python -m benchmarks.data_scale

# Transfer demonstration (issue 4): pretrain MobileNetV2 on CIFAR-10 once (~30 min on 2 cores; skipped when
# a finished pretraining run exists), then fine-tune hymenoptera_transfer from it and from random init.
PRETRAINED = $(lastword $(sort $(wildcard runs/cifar10_mobilenet_pretrain/*/metrics.json)))
bench-transfer: $(BENCH_STAMP)
	@if [ -z "$(PRETRAINED)" ]; then benchmarks/train_experiments.sh cifar10_mobilenet_pretrain; fi
	$(BIN)/python -m benchmarks.transfer --weights "$$(dirname $$(ls runs/cifar10_mobilenet_pretrain/*/metrics.json | sort | tail -1))/checkpoints/best.keras"
