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
export SCENARIO N_COUNT N_DEVICES DEVICES_PER_PARTITION N_PARTITIONS PARTITION_OFFSET DATA_TYPE DEVICE BATCH_SIZE \
       DATA LOG_PATH MODE ACCURACY_TARGET USER_CONF ENV_MANAGER ENV_DIR SYNTH_N SYNTH_SEED
# Multi-node (README "Several nodes"): LAUNCHER=local|torchrun and torchrun's rendezvous.
export LAUNCHER NNODES NODE_RANK MASTER_ADDR MASTER_PORT INIT_TIMEOUT DIST_TIMEOUT DRY_RUN
# How the model runs (README "Backends"): BACKEND=pytorch|pytorch-compile|openai|<plug-in>.
export BACKEND SERVER_URL
# LoadGen user.conf knobs for MODE=performance (README "Performance mode").
export TARGET_QPS TARGET_LATENCY MIN_DURATION MIN_QUERY_COUNT

VENV := .venv
DEV_STAMP := $(VENV)/.evalkit-env
DEMO_DIR := logs/demo/$(shell date +%Y%m%d-%H%M%S)

.PHONY: help all demo dev test targets $(MODELS)

help: ## this list
	@echo "make <model>     build env, get data, evaluate, check targets; models: $(READY)"
	@echo "                 (not in the kit yet: $(PENDING))"
	@echo "make all         every model above, one after the other"
	@echo "make demo        whole pipeline on synthetic ResNet50 (2 partitions, 2 CPU workers), BERT and GPT-J (3 each), then the report"
	@echo "make dev         developer environment in $(VENV)"
	@echo "make test        test suite in $(VENV)"
	@echo "make targets     MLPerf accuracy targets table (in any env already built; builds none)"
	@echo "make report      HTML + Markdown report over every run in LOG_DIR (default logs/)"
	@echo "make metrics     dashboard rows (metrics.csv/json) over LOG_DIR [SYSTEM=name]"
	@echo "bin/evalkit check|gather|status|... RUN   the kit's CLI in the env of RUN's model, from any directory"
	@echo "make remote URL=s3://bucket/prefix [ENDPOINT=http://host:port]   point the DVC remote mlperf-data"
	@echo "make data_add_<model> SRC=dataset_dir [MODEL_SRC=checkpoint_dir]   validate, dvc add + push once"
	@echo "make log_<model> | log_all      pull the team's verified log(s) into logs/internal/<model>/"
	@echo "make publish_log_<model> RUN=run_dir [ALLOW_SYNTHETIC=1] [ALLOW_PARTIAL=1]   publish a PASSing run"
	@echo "make compare_<model> RUN=run_dir   metric-by-metric difference vs logs/internal/<model>"
	@echo "make explore_<model> BATCH_SIZES=1,8,32 DATA_TYPES=fp32,bf16 BACKENDS=pytorch,pytorch-compile [PROBE=256]"
	@echo "                 [QUANTIZERS=..] [LOG_PATH=sweep_dir] [EXPLORE_MEM_LIMIT=2G]   sweep: short performance runs +"
	@echo "                 probe accuracy per point, best point and its full-set command (docs/explore.md)"
	@echo "variables: SCENARIO N_COUNT N_DEVICES N_PARTITIONS PARTITION_OFFSET DATA_TYPE DEVICE"
	@echo "           BATCH_SIZE DATA=real|synthetic LOG_PATH MODE ACCURACY_TARGET USER_CONF ENV_MANAGER"
	@echo "           LAUNCHER=local|torchrun NNODES NODE_RANK MASTER_ADDR MASTER_PORT INIT_TIMEOUT DIST_TIMEOUT DRY_RUN=1"
	@echo "           BACKEND=pytorch|pytorch-compile|openai|<plug-in> SERVER_URL"

$(READY): %:
	scripts/build_$*_env.sh
	scripts/eval_$*.sh

$(PENDING):
	@echo "error: model '$@' is not in this kit yet (ready: $(READY))" >&2
	@exit 2

all: $(READY)

demo:
	$(MAKE) --no-print-directory resnet DATA=synthetic N_DEVICES=2 N_PARTITIONS=2 LOG_PATH=$(DEMO_DIR)/resnet
	$(MAKE) --no-print-directory bert DATA=synthetic N_COUNT=12 N_DEVICES=3 N_PARTITIONS=3 LOG_PATH=$(DEMO_DIR)/bert
	$(MAKE) --no-print-directory gpt-j DATA=synthetic N_COUNT=6 N_DEVICES=3 N_PARTITIONS=3 LOG_PATH=$(DEMO_DIR)/gpt-j
	@echo "demo run dirs: $(DEMO_DIR)/{resnet,bert,gpt-j}"
	$(MAKE) --no-print-directory report

$(DEV_STAMP): envs/dev.yml scripts/lib/common.sh
	source scripts/lib/common.sh && ENV_MANAGER=venv make_env envs/dev.yml "$(CURDIR)/$(VENV)"

dev: $(DEV_STAMP)

test: dev browser mbxp-node
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q tests

# --- reports: stdlib + numpy only, so any built env will do (the demo has only .envs/resnet) ----
LOG_DIR ?= logs
KIT_ENVS = $(wildcard $(VENV)/bin/python $(or $(ENV_DIR),.envs)/*/bin/python)
KIT_PY = $(firstword $(KIT_ENVS) python3)
.PHONY: report metrics browser mbxp-node

targets:
	PYTHONPATH="$(CURDIR)" $(KIT_PY) -m evalkit targets

report:
	PYTHONPATH="$(CURDIR)" $(KIT_PY) -m evalkit report "$(LOG_DIR)"

metrics:
	PYTHONPATH="$(CURDIR)" $(KIT_PY) -m evalkit metrics "$(LOG_DIR)" $(if $(SYSTEM),--system "$(SYSTEM)")

# The system tools the tests use: Chromium (tests/test_report.py renders the report) and bubblewrap (the
# sandbox of generated code, tests/test_sandbox.py). CI runs `make test` as root on a clean machine.
browser:
	need=""; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need="chromium"; \
	command -v bwrap >/dev/null || need="$$need bubblewrap"; \
	if [ -n "$$need" ]; then \
	  [ "$$(id -u)" = 0 ] || { echo "error: the tests need$$need: sudo apt-get install -y$$need" >&2; exit 2; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need; \
	fi

# MBXP's pinned npm packages (lodash, typescript) in the dev env, by the function the Mixtral env build runs
# (language/mixtral/mbxp.py install-node); npm itself is installed like the tools above.
mbxp-node: dev
	command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] || { echo "error: the tests need npm: sudo apt-get install -y npm" >&2; exit 2; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	PYTHONPATH="$(CURDIR)" $(VENV)/bin/python -m language.mixtral.mbxp install-node

# --- data, checkpoints and verified logs through DVC: all logic in evalkit/data.py ---------------
# data_cmd (scripts/lib/common.sh) runs `evalkit data ...` in the model's env, where its loader works.
PUBLISHED_LOGS := $(patsubst logs/internal/%.dvc,%,$(wildcard logs/internal/*.dvc))
.PHONY: remote log_all

# Pasted from an error message it must just work: any kit env runs it (bin/evalkit) with the first
# dvc on PATH or .venv's; the developer env (it has dvc) is built only when one of them is missing.
remote:
	[ -n "$(URL)" ] || { echo "error: make remote needs URL=s3://bucket/prefix (or a local dir)" >&2; exit 2; }
	if ! { command -v dvc >/dev/null || [ -x $(VENV)/bin/dvc ]; } || [ -z "$(strip $(KIT_ENVS))" ]; then \
	  $(MAKE) --no-print-directory dev; fi
	bin/evalkit data remote "$(URL)" $(if $(ENDPOINT),--endpoint "$(ENDPOINT)")

data_add_%:
	[ -n "$(SRC)" ] || { echo "error: make $@ needs SRC=/path/to/dataset [MODEL_SRC=/path/to/checkpoint]" >&2; exit 2; }
	source scripts/lib/common.sh && data_cmd $* add $* --src "$(SRC)" $(if $(MODEL_SRC),--model_src "$(MODEL_SRC)")

log_%:
	source scripts/lib/common.sh && data_cmd $* pull-log $*

log_all: $(addprefix log_,$(PUBLISHED_LOGS))
	@echo "verified logs: $(or $(PUBLISHED_LOGS),none published yet (make publish_log_<model> RUN=...))"

publish_log_%:
	[ -n "$(RUN)" ] || { echo "error: make $@ needs RUN=<run dir>" >&2; exit 2; }
	source scripts/lib/common.sh && data_cmd $* publish-log $* "$(RUN)" \
	  $(if $(filter 1,$(ALLOW_SYNTHETIC)),--allow_synthetic) $(if $(filter 1,$(ALLOW_PARTIAL)),--allow_partial)

compare_%:
	[ -n "$(RUN)" ] || { echo "error: make $@ needs RUN=<run dir>" >&2; exit 2; }
	source scripts/lib/common.sh && evalkit $* compare "$(RUN)" logs/internal/$*

# Batch size x data type x backend sweep (docs/explore.md); all logic in evalkit/explore.py.
explore_%:
	[ -n "$(BATCH_SIZES)" ] || { echo "error: make $@ needs BATCH_SIZES=1,8,32 (and DATA_TYPES=fp32,bf16 BACKENDS=pytorch,pytorch-compile)" >&2; exit 2; }
	scripts/build_$*_env.sh
	source scripts/lib/common.sh && evalkit $* explore $* --data "$${DATA:-real}" --batch_sizes "$(BATCH_SIZES)" \
	  $(if $(DATA_TYPES),--data_types "$(DATA_TYPES)") $(if $(BACKENDS),--backends "$(BACKENDS)") \
	  $(if $(QUANTIZERS),--quantizers "$(QUANTIZERS)") $(if $(PROBE),--probe "$(PROBE)") \
	  $(if $(SCENARIO),--scenario "$(SCENARIO)") $(if $(DEVICE),--device "$(DEVICE)") $(if $(N_COUNT),--n_count "$(N_COUNT)") \
	  $(if $(ACCURACY_TARGET),--accuracy_target "$(ACCURACY_TARGET)") $(if $(LOG_PATH),--sweep_dir "$(LOG_PATH)") \
	  $(if $(EXPLORE_MEM_LIMIT),--mem_limit "$(EXPLORE_MEM_LIMIT)") $(if $(MIN_DURATION),--min_duration "$(MIN_DURATION)") \
	  $(if $(MIN_QUERY_COUNT),--min_query_count "$(MIN_QUERY_COUNT)")
