# MLPerf Inference accuracy-evaluation kit. `make help` lists the targets.
# Every recipe runs under bash -euo pipefail: a failing step fails make.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

MODELS := resnet retinanet 3d-unet bert gpt-j llama2 mixtral stablediffusion dlrm rnnt
# Models whose scripts have landed; the rest say so instead of failing obscurely.
READY := $(filter $(MODELS),$(patsubst scripts/eval_%.sh,%,$(wildcard scripts/eval_*.sh)))
PENDING := $(filter-out $(READY),$(MODELS))

# Knobs read by scripts/lib/common.sh; exported so `make resnet N_COUNT=24` reaches the scripts.
export SCENARIO N_COUNT N_DEVICES N_PARTITIONS PARTITION_OFFSET DATA_TYPE DEVICE BATCH_SIZE \
       DATA LOG_PATH MODE ACCURACY_TARGET USER_CONF ENV_MANAGER ENV_DIR SYNTH_N SYNTH_SEED

VENV := .venv
DEV_STAMP := $(VENV)/.evalkit-env
DEMO_LOG := logs/demo/resnet-$(shell date +%Y%m%d-%H%M%S)

.PHONY: help all demo dev test targets $(MODELS)

help: ## this list
	@echo "make <model>     build env, get data, evaluate, check targets; models: $(READY)"
	@echo "                 (not in the kit yet: $(PENDING))"
	@echo "make all         every model above, one after the other"
	@echo "make demo        whole pipeline on synthetic ResNet50, 2 partitions on 2 CPU workers"
	@echo "make dev         developer environment in $(VENV)"
	@echo "make test        test suite in $(VENV)"
	@echo "make targets     MLPerf accuracy targets table"
	@echo "variables: SCENARIO N_COUNT N_DEVICES N_PARTITIONS PARTITION_OFFSET DATA_TYPE DEVICE"
	@echo "           BATCH_SIZE DATA=real|synthetic LOG_PATH MODE ACCURACY_TARGET USER_CONF ENV_MANAGER"

$(READY): %:
	scripts/build_$*_env.sh
	scripts/eval_$*.sh

$(PENDING):
	@echo "error: model '$@' is not in this kit yet (ready: $(READY))" >&2
	@exit 2

all: $(READY)

demo:
	$(MAKE) --no-print-directory resnet DATA=synthetic N_DEVICES=2 N_PARTITIONS=2 LOG_PATH=$(DEMO_LOG)
	@echo "demo run dir: $(DEMO_LOG)"

$(DEV_STAMP): envs/dev.yml scripts/lib/common.sh
	source scripts/lib/common.sh && ENV_MANAGER=venv make_env envs/dev.yml "$(CURDIR)/$(VENV)"

dev: $(DEV_STAMP)

test: dev
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q tests

targets: dev
	$(VENV)/bin/python -m evalkit targets
