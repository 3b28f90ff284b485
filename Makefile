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

.PHONY: setup train test test-slow tensorboard evaluate export clean-venv

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

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

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
