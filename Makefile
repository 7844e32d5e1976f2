# MLPerf Inference accuracy-evaluation kit. `make help` lists the targets.
# Every recipe runs under bash -euo pipefail: a failing step fails make.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

MODELS := resnet retinanet 3d-unet bert gpt-j llama2 mixtral stablediffusion dlrm rnnt llama3.1-8b whisper deepseek-r1 gpt-oss-120b
# Models whose scripts have landed; the rest say so instead of failing obscurely.
READY := $(filter $(MODELS),$(patsubst scripts/eval_%.sh,%,$(wildcard scripts/eval_*.sh)))
PENDING := $(filter-out $(READY),$(MODELS))

# Every variable the kit reads, in one list (add yours here): a command-line variable outside it is
# refused before anything is built (`NCOUNT=8` must not start the 50,000-image run). RUN_VARS are
# exported so `make resnet N_COUNT=24` reaches scripts/lib/common.sh; MAKE_VARS are read here.
#   run knobs (scripts/lib/common.sh eval_model), multi-node (docs/multinode.md), BACKEND (docs/backends.md),
#   LoadGen's user.conf knobs for MODE=performance, quantization, sweeps (BATCH_SIZES ...).
RUN_VARS := SCENARIO N_COUNT N_DEVICES DEVICES_PER_PARTITION N_PARTITIONS PARTITION_OFFSET DATA_TYPE DEVICE \
       BATCH_SIZE DATA LOG_PATH MODE ACCURACY_TARGET USER_CONF ENV_MANAGER ENV_DIR SYNTH_N SYNTH_SEED \
       LAUNCHER NNODES NODE_RANK MASTER_ADDR MASTER_PORT INIT_TIMEOUT DIST_TIMEOUT DRY_RUN \
       BACKEND SERVER_URL SERVER_URLS TARGET_QPS TARGET_LATENCY MIN_DURATION MIN_QUERY_COUNT \
       QUANTIZER QUANTIZER_OPTION CALIBRATE N_CALIB BATCH_SIZES DATA_TYPES BACKENDS QUANTIZERS PROBE PYTHON
MAKE_VARS := URL ENDPOINT SRC MODEL_SRC RUN ALLOW_SYNTHETIC ALLOW_PARTIAL SYSTEM LOG_DIR NO_BROWSER EXPLORE_MEM_LIMIT TEST_WORKERS
KIT_VARS := $(RUN_VARS) $(MAKE_VARS)
export $(RUN_VARS)

# GNU make exits 2 for any failed recipe; scripts/lib/make_exit.c (loaded here, compiled once into
# .make/ by cc, renamed into place: nodes sharing the kit dir may compile it at once) makes `make <model>` exit with the kit's code instead: 0 PASS, 1 FAIL, 2 error,
# 3 busy, 75 preempted. A recipe line wrapped in $(call keep,...) records its code for it. Without
# a C compiler make still works and exits 2 on every failure (docs/errors.md).
ifneq ($(filter load,$(.FEATURES)),)
$(shell mkdir -p .make && { [ .make/make_exit.so -nt scripts/lib/make_exit.c ] || { $${CC:-cc} -shared -fPIC -O \
  -o .make/make_exit.so.$$$$ scripts/lib/make_exit.c && mv -f .make/make_exit.so.$$$$ .make/make_exit.so; }; } >/dev/null 2>&1)
-load .make/make_exit.so
.make/make_exit.so: ;
endif
# (its argument is recipe text: a bare comma in it would end the argument)
keep = $(1) || { c=$$?; $(if $(KIT_CODE_FILE),echo $$c > $(KIT_CODE_FILE);,echo "note: the kit exited $$c; make \
  can only exit 2 here (no C compiler built .make/make_exit.so: docs/errors.md)" >&2;) exit $$c; }
# One line on stderr and exit 2 now (while the Makefile is read: nothing has been built).
refuse = $(if $(filter .make/make_exit.so,$(.LOADED)),$(kit-exit 2,$(1)),$(error $(1)))

# A misspelled variable on the command line (environment variables are not checked).
CMDLINE_VARS := $(foreach v,$(filter-out -%,$(.VARIABLES)),$(if $(filter command line,$(origin $(v))),$(v)))
UNKNOWN_VARS := $(filter-out $(KIT_VARS),$(CMDLINE_VARS))
ifneq ($(UNKNOWN_VARS),)
BAD_VAR := $(firstword $(UNKNOWN_VARS))
$(call refuse,$(shell source scripts/lib/common.sh && unknown_variable $(BAD_VAR) '$(value $(BAD_VAR))' \
  '$(strip $(MAKECMDGOALS) $(subst ^|,\ ,$(filter-out $(BAD_VAR)=%,$(subst \ ,^|,$(MAKEOVERRIDES)))))' $(KIT_VARS)))
endif

VENV := .venv
DEV_STAMP := $(VENV)/.evalkit-env
DEMO_DIR := logs/demo/$(shell date +%Y%m%d-%H%M%S)

TARGETS := help all demo dev test targets report metrics remote tools log_all browser mbxp-node qresnet qbert qgpt-j
.PHONY: $(TARGETS) $(MODELS)

help: ## this list
	@echo "make <model>     build env, get data, evaluate, check targets; models: $(READY)"
	$(if $(PENDING),@echo "                 (not in the kit yet: $(PENDING))")
	@echo "make all         every model above, one after the other"
	@echo "make demo        whole pipeline on synthetic ResNet50 (2 partitions, 2 CPU workers), BERT and GPT-J (3 each), then the report"
	@echo "make dev         developer environment in $(VENV)"
	@echo "make test        test suite in $(VENV); installs chromium, bubblewrap, npm system-wide (apt) when missing"
	@echo "                 [NO_BROWSER=1: no chromium, its 3 report-rendering tests not run, said in the summary]"
	@echo "make targets     MLPerf accuracy targets table (in any env already built; builds none)"
	@echo "make report      HTML + Markdown report over every run in LOG_DIR (default logs/)"
	@echo "make metrics     dashboard rows (metrics.csv/json) over LOG_DIR [SYSTEM=name]"
	@echo "bin/evalkit check|gather|status|... RUN   the kit's CLI in the env of RUN's model, from any directory"
	@echo "make remote URL=s3://YOUR-BUCKET/PREFIX [ENDPOINT=http://HOST:PORT]   point the DVC remote mlperf-data (builds nothing)"
	@echo "make data_add_<model> SRC=dataset_dir [MODEL_SRC=checkpoint_dir_or_file]   validate, dvc add + push once"
	@echo "make tools       the small env with dvc (.envs/tools), built by the data targets when no dvc is found"
	@echo "make log_<model> | log_all      pull the team's verified log(s) into logs/internal/<model>/"
	@echo "make publish_log_<model> RUN=run_dir [ALLOW_SYNTHETIC=1] [ALLOW_PARTIAL=1]   publish a PASSing run"
	@echo "make compare_<model> RUN=run_dir   metric-by-metric difference vs logs/internal/<model>"
	@echo "make explore_<model> BATCH_SIZES=1,8,32 DATA_TYPES=fp32,bf16 BACKENDS=pytorch,pytorch-compile [PROBE=256]"
	@echo "                 [QUANTIZERS=..] [LOG_PATH=sweep_dir] [EXPLORE_MEM_LIMIT=2G]   sweep: short performance runs +"
	@echo "                 probe accuracy per point, best point and its full-set command (docs/explore.md)"
	@echo "make qresnet | qbert | qgpt-j   the model quantized: = make <model> CALIBRATE=true (calibrate once on the MLPerf"
	@echo "                 calibration split, N_CALIB samples, then every partition evaluates that model; docs/quantization.md)"
	@echo "variables: SCENARIO N_COUNT N_DEVICES N_PARTITIONS PARTITION_OFFSET DATA_TYPE DEVICE"
	@echo "           BATCH_SIZE DATA=real|synthetic LOG_PATH MODE ACCURACY_TARGET USER_CONF ENV_MANAGER"
	@echo "           LAUNCHER=local|torchrun NNODES NODE_RANK MASTER_ADDR MASTER_PORT INIT_TIMEOUT DIST_TIMEOUT DRY_RUN=1"
	@echo "           BACKEND=pytorch|pytorch-compile|openai|<plug-in> SERVER_URL SERVER_URLS"
	@echo "           CALIBRATE=true|false N_CALIB QUANTIZER=int8-static|w8a8-smoothquant|<plug-in> QUANTIZER_OPTION=\"K=V ..\""
	@echo "           (a variable not listed in the Makefile's KIT_VARS is refused: NCOUNT=8 is not N_COUNT=8)"

$(READY): %:
	$(call keep,scripts/build_$*_env.sh)
	$(call keep,scripts/eval_$*.sh)

# Quantized variants (docs/quantization.md): the model's run with CALIBRATE=true (its built-in quantizer
# unless QUANTIZER names another); every other variable passes through.
qresnet qbert qgpt-j: q%:
	$(call keep,$(MAKE) --no-print-directory $* CALIBRATE=$(or $(CALIBRATE),true))

$(PENDING):
	@echo "error: model '$@' is not in this kit yet (ready: $(READY))" >&2
	@exit 2

all: $(READY)

# `make resnt`: one line naming the closest model or target, not make's "No rule to make target".
.DEFAULT:
	$(call refuse,$(shell source scripts/lib/common.sh && unknown_target '$@' $(MODELS) -- $(TARGETS)))

# Each step says what it does; env builds and synthetic sets add a line every 30 s (common.sh heartbeat).
demo:
	@echo "[demo] 1/4 resnet: its env (first time: minutes), a synthetic ImageNet set, 2 partitions on 2 CPU workers" >&2
	$(call keep,$(MAKE) --no-print-directory resnet DATA=synthetic N_DEVICES=2 N_PARTITIONS=2 LOG_PATH=$(DEMO_DIR)/resnet)
	@echo "[demo] 2/4 bert: its env, a synthetic SQuAD set, 12 samples in 3 partitions on 3 CPU workers" >&2
	$(call keep,$(MAKE) --no-print-directory bert DATA=synthetic N_COUNT=12 N_DEVICES=3 N_PARTITIONS=3 LOG_PATH=$(DEMO_DIR)/bert)
	@echo "[demo] 3/4 gpt-j: its env, a synthetic CNN-DailyMail set, 6 samples in 3 partitions on 3 CPU workers" >&2
	$(call keep,$(MAKE) --no-print-directory gpt-j DATA=synthetic N_COUNT=6 N_DEVICES=3 N_PARTITIONS=3 LOG_PATH=$(DEMO_DIR)/gpt-j)
	@echo "demo run dirs: $(DEMO_DIR)/{resnet,bert,gpt-j}"
	@echo "[demo] 4/4 the report over logs/" >&2
	$(call keep,$(MAKE) --no-print-directory report)

$(DEV_STAMP): envs/dev.yml scripts/lib/common.sh
	source scripts/lib/common.sh && ENV_MANAGER=venv make_env envs/dev.yml "$(CURDIR)/$(VENV)"

dev: $(DEV_STAMP)

# NO_BROWSER=1: no Chromium is installed and the tests that render the report in it are deselected,
# said before and after pytest's summary (never a silent skip).
BROWSER_TESTS := tests/test_report.py::test_html_renders_in_chromium_without_errors \
                 tests/test_report.py::test_page_reads_at_1280px_with_many_runs tests/test_report.py::test_console_errors_are_caught
NO_BROWSER_NOTE = echo "==== NO_BROWSER=1: $(words $(BROWSER_TESTS)) browser tests NOT run ($(notdir $(BROWSER_TESTS))): not a full pass ====" >&2

# TEST_WORKERS: pytest-xdist workers (auto: one per core, at most 4; 0: one process). Tests that share
# a fixture stay on one worker (tests/conftest.py: xdist groups).
TEST_WORKERS ?= auto
test: dev browser mbxp-node
	$(if $(filter 1,$(NO_BROWSER)),@$(NO_BROWSER_NOTE))
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --maxprocesses 4 --dist loadgroup tests $(if $(filter 1,$(NO_BROWSER)),$(addprefix --deselect ,$(BROWSER_TESTS))) \
	  || { c=$$?; $(if $(filter 1,$(NO_BROWSER)),$(NO_BROWSER_NOTE);) $(if $(KIT_CODE_FILE),echo $$c > $(KIT_CODE_FILE);) exit $$c; }
	$(if $(filter 1,$(NO_BROWSER)),@$(NO_BROWSER_NOTE))

# --- reports: stdlib + numpy only, so any built env will do (the demo has only .envs/resnet) ----
LOG_DIR ?= logs
KIT_ENVS = $(filter-out %/tools/bin/python,$(wildcard $(VENV)/bin/python $(or $(ENV_DIR),.envs)/*/bin/python))
KIT_PY = $(firstword $(KIT_ENVS) python3)
.PHONY: report metrics browser mbxp-node

targets:
	$(call keep,PYTHONPATH="$(CURDIR)" $(KIT_PY) -m evalkit targets)

report:
	$(call keep,PYTHONPATH="$(CURDIR)" $(KIT_PY) -m evalkit report "$(LOG_DIR)")

metrics:
	$(call keep,PYTHONPATH="$(CURDIR)" $(KIT_PY) -m evalkit metrics "$(LOG_DIR)" $(if $(SYSTEM),--system "$(SYSTEM)"))

# The system tools the tests use: Chromium (tests/test_report.py renders the report) and bubblewrap (the
# sandbox of generated code, tests/test_sandbox.py). CI runs `make test` as root on a clean machine.
# Each is installed only when missing, and named (with why) before apt-get runs; NO_BROWSER=1 leaves Chromium out.
browser:
	source scripts/lib/common.sh && system_tools "the tests" \
	  $(if $(filter 1,$(NO_BROWSER)),,chromium:chromium-browser:chromium) bwrap:bubblewrap

# MBXP's pinned npm packages (lodash, typescript) in the dev env, by the function the Mixtral env build runs
# (language/mixtral/mbxp.py install-node); npm itself is installed like the tools above.
mbxp-node: dev
	source scripts/lib/common.sh && system_tools "the tests" npm:npm
	PYTHONPATH="$(CURDIR)" $(VENV)/bin/python -m language.mixtral.mbxp install-node

# --- data, checkpoints and verified logs through DVC: all logic in evalkit/data.py ---------------
# data_cmd (scripts/lib/common.sh) runs `evalkit data ...` in the model's env, where its loader works.
PUBLISHED_LOGS := $(patsubst logs/internal/%.dvc,%,$(wildcard logs/internal/*.dvc))
.PHONY: remote log_all

# Writes .dvc/config with any python3 (evalkit/data.py, stdlib only): no env, no dvc needed.
remote:
	$(call keep,PYTHONPATH="$(CURDIR)" python3 -m evalkit.data remote "$(URL)" $(if $(ENDPOINT),--endpoint "$(ENDPOINT)"))

tools:
	source scripts/lib/common.sh && make_env envs/tools.yml "$$(env_path tools)"

# SRC, MODEL_SRC and the remote are checked before the model's env is built (it takes minutes).
data_add_%:
	[ -n "$(SRC)" ] || { echo "error: make $@ needs SRC=/path/to/dataset [MODEL_SRC=/path/to/checkpoint]" >&2; exit 2; }
	$(call keep,source scripts/lib/common.sh && check_model $* && \
	  data_preflight preflight-add $* --src "$(SRC)" $(if $(MODEL_SRC),--model_src "$(MODEL_SRC)") && \
	  data_cmd $* add $* --src "$(SRC)" $(if $(MODEL_SRC),--model_src "$(MODEL_SRC)"))

log_%:
	$(call keep,source scripts/lib/common.sh && data_cmd $* pull-log $*)

log_all: $(addprefix log_,$(PUBLISHED_LOGS))
	@echo "verified logs: $(or $(PUBLISHED_LOGS),none published yet (make publish_log_<model> RUN=...))"

publish_log_%:
	[ -n "$(RUN)" ] || { echo "error: make $@ needs RUN=<run dir>" >&2; exit 2; }
	$(call keep,source scripts/lib/common.sh && data_cmd $* publish-log $* "$(RUN)" \
	  $(if $(filter 1,$(ALLOW_SYNTHETIC)),--allow_synthetic) $(if $(filter 1,$(ALLOW_PARTIAL)),--allow_partial))

compare_%:
	[ -n "$(RUN)" ] || { echo "error: make $@ needs RUN=<run dir>" >&2; exit 2; }
	$(call keep,source scripts/lib/common.sh && check_model $* && evalkit $* compare "$(RUN)" logs/internal/$*)

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
