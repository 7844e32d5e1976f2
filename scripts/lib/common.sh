# Shared shell logic for scripts/build_<model>_env.sh and scripts/eval_<model>.sh.
# Sourced, never run. Every function fails loudly: callers run under set -euo pipefail.

KIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENV_DIR="${ENV_DIR:-$KIT_ROOT/.envs}"

die() { echo "error: $*" >&2; exit 2; }
say() { echo "[evalkit] $*" >&2; }
# qjoin ARGS...: one line that the shell reads back as exactly these words.
qjoin() { local out; printf -v out '%q ' "$@"; echo "${out% }"; }

env_path() { echo "$ENV_DIR/$1"; }

# The env spec's hash: an env is rebuilt only when its spec changed (or --force).
spec_hash() { sha256sum "$1" | cut -d' ' -f1; }

pick_manager() {
  local want="${ENV_MANAGER:-auto}"
  case "$want" in
    auto)
      for m in micromamba mamba conda; do
        if command -v "$m" >/dev/null 2>&1; then echo "$m"; return; fi
      done
      echo venv ;;
    conda)
      for m in micromamba mamba conda; do
        if command -v "$m" >/dev/null 2>&1; then echo "$m"; return; fi
      done
      die "ENV_MANAGER=conda but none of micromamba, mamba, conda is on PATH" ;;
    venv) echo venv ;;
    *) die "ENV_MANAGER=$want is not one of auto, conda, venv" ;;
  esac
}

# make_env SPEC_YML TARGET_DIR [--force]: build TARGET_DIR from the spec, idempotently.
make_env() {
  local spec="$1" target="$2" force="${3:-}"
  [ -f "$spec" ] || die "env spec $spec does not exist"
  local hash stamp="$target/.evalkit-env" mgr
  mgr="$(pick_manager)"  # validates ENV_MANAGER even when nothing needs building
  hash="$(spec_hash "$spec")"
  if [ "$force" != "--force" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
    say "env $target is up to date with $spec"
    return 0
  fi
  if [ -e "$target" ]; then
    say "rebuilding $target (spec changed or --force)"
    rm -rf "$target"
  fi
  mkdir -p "$(dirname "$target")"
  # Build into a temp dir and rename at the end: an interrupted build leaves no half env.
  local tmp="$target.partial"
  rm -rf "$tmp"
  if [ "$mgr" = venv ]; then
    local want_py py="${PYTHON:-}"
    want_py="$(python3 "$KIT_ROOT/scripts/lib/envspec.py" python "$spec")"
    if [ -z "$py" ]; then
      if [ -n "$want_py" ] && command -v "python$want_py" >/dev/null 2>&1; then py="python$want_py"; else py=python3; fi
    fi
    say "building venv $target from $spec with $py"
    "$py" -m venv --prompt "$(basename "$target")" "$tmp"
    "$tmp/bin/python" -m pip install --quiet --upgrade pip
    # One pip install per step of the spec (envspec.py: `# evalkit: then` starts a new one).
    local steps step
    steps="$(python3 "$KIT_ROOT/scripts/lib/envspec.py" pip "$spec")"
    while IFS= read -r step; do
      if [ -n "$step" ]; then
        # shellcheck disable=SC2086
        "$tmp/bin/python" -m pip install --quiet $step
      fi
    done <<< "$steps"
  else
    say "building $mgr env $target from $spec"
    if [ "$mgr" = micromamba ]; then
      micromamba create --yes -p "$tmp" -f "$spec"
    else
      "$mgr" env create -p "$tmp" -f "$spec"
    fi
  fi
  # Console scripts (dvc, moto_server, pip) and activate name the build dir: point them at the final one.
  local f
  while IFS= read -r -d '' f; do
    sed -i "s|$tmp|$target|g" "$f"
  done < <(grep -rlIZ -F "$tmp" "$tmp/bin")
  echo "$hash" > "$tmp/.evalkit-env"
  mv "$tmp" "$target"
  say "env ready: $target"
}

kit_python() {
  local py
  py="$(env_path "$1")/bin/python"
  [ -x "$py" ] || die "no environment for $1 at $(env_path "$1"); run scripts/build_$1_env.sh first"
  echo "$py"
}

# evalkit MODEL ARGS...: run the kit inside MODEL's env.
evalkit() {
  local model="$1"; shift
  local py
  py="$(kit_python "$model")"
  PYTHONPATH="$KIT_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$py" -m evalkit "$@"
}

# prepare_data MODEL: synthetic -> write once under data/synthetic/<model>; real -> DVC pull.
prepare_data() {
  local model="$1" data="${DATA:-real}"
  case "$data" in
    synthetic)
      local n="${SYNTH_N:-}"
      if [ -z "$n" ]; then
        n="$(evalkit "$model" info "$model" | "$(kit_python "$model")" -c 'import json,sys; print(json.load(sys.stdin)["synthetic_n"])')"
      fi
      evalkit "$model" synth "$model" --out "$KIT_ROOT/data/synthetic/$model" --n "$n" --seed "${SYNTH_SEED:-0}" >/dev/null
      say "synthetic $model data ready in data/synthetic/$model" ;;
    real)
      pull_data "$model" ;;
    *) die "DATA=$data is not one of real, synthetic" ;;
  esac
}

# pull_data MODEL: the model's dataset and checkpoint from DVC (no-op when present).
# All DVC logic (pointers, dvc binary, one-line errors) lives in evalkit/data.py.
pull_data() {
  evalkit "$1" data pull "$1"
}

# data_cmd MODEL ARGS...: `python -m evalkit data ARGS` in MODEL's env (built first if needed):
# the make targets data_add_/log_/publish_log_ run here, where the model's loader works.
data_cmd() {
  local model="$1"; shift
  make_env "$KIT_ROOT/envs/$model.yml" "$(env_path "$model")"
  evalkit "$model" data "$@"
}

# build_env MODEL [--force]: the whole build step of `make MODEL`.
build_env() {
  local model="$1"; shift
  local force=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --force) force="--force" ;;
      -h|--help) echo "usage: scripts/build_${model}_env.sh [--force]   (ENV_MANAGER=auto|conda|venv, DATA=real|synthetic)"; exit 0 ;;
      *) die "build_${model}_env.sh: unknown option '$1'" ;;
    esac
    shift
  done
  pick_manager >/dev/null    # a bad ENV_MANAGER or DATA is refused first, then missing data,
  check_data_source "$model"  # before the env: a ~1 GB build must not end in "no data"
  make_env "$KIT_ROOT/envs/$model.yml" "$(env_path "$model")" "$force"
  prepare_data "$model"
}

# check_data_source MODEL: DATA is valid and, for real data, its dataset and checkpoint are
# there or have a DVC pointer to pull (no pointers ship with the kit: they are made once by
# `make data_add_<model>`). The same rule as evalkit/data.py pull_model_data, without an env.
check_data_source() {
  local model="$1" data="${DATA:-real}" d
  case "$data" in
    synthetic) return 0 ;;
    real) ;;
    *) die "DATA=$data is not one of real, synthetic" ;;
  esac
  for d in dataset models; do
    if [ ! -d "$KIT_ROOT/data/$d/$model" ] && [ ! -f "$KIT_ROOT/data/$d/$model.dvc" ]; then
      die "DATA=real but $model has no data/$d/$model/ and no DVC pointer data/$d/$model.dvc" \
          "(the kit ships none); import the data once with" \
          "\`cd $(printf %q "$KIT_ROOT") && make data_add_$model SRC=/path/to/dataset MODEL_SRC=/path/to/checkpoint\`," \
          "or run with DATA=synthetic"
    fi
  done
}

# Variables that shape a run: recorded in the resume command the kit prints on failure.
RUN_VARS=(DATA SCENARIO MODE N_COUNT N_DEVICES DEVICES_PER_PARTITION N_PARTITIONS PARTITION_OFFSET DATA_TYPE DEVICE BATCH_SIZE
          LOG_PATH ACCURACY_TARGET USER_CONF TARGET_QPS TARGET_LATENCY MIN_DURATION MIN_QUERY_COUNT
          LAUNCHER NNODES NODE_RANK MASTER_ADDR MASTER_PORT INIT_TIMEOUT DIST_TIMEOUT ENV_DIR BACKEND SERVER_URL)

# eval_model MODEL [--launcher local|torchrun] [--n_count N] [--n_devices D] [--n_partitions P] [--partition_offset O] [-- extra args]
eval_model() {
  local model="$1"; shift
  local n_count="${N_COUNT:-}" n_devices="${N_DEVICES:-1}" n_partitions="${N_PARTITIONS:-}"
  local offset="${PARTITION_OFFSET:-0}" launcher="${LAUNCHER:-local}" extra=() orig=("$@")
  while [ $# -gt 0 ]; do
    case "$1" in
      --n_count|--n_devices|--n_partitions|--partition_offset|--launcher)
        [ $# -ge 2 ] || die "eval_${model}.sh: $1 needs a value"
        case "$1" in
          --n_count) n_count="$2" ;;
          --n_devices) n_devices="$2" ;;
          --n_partitions) n_partitions="$2" ;;
          --partition_offset) offset="$2" ;;
          --launcher) launcher="$2" ;;
        esac
        shift 2 ;;
      -h|--help)
        echo "usage: scripts/eval_${model}.sh [--launcher local|torchrun] [--n_count N] [--n_devices D] [--n_partitions P] [--partition_offset O] [-- evalkit run options]"
        echo "       torchrun: N_DEVICES processes per node; NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT; DRY_RUN=1 prints the command"
        exit 0 ;;
      --) shift; extra+=("$@"); break ;;
      *) die "eval_${model}.sh: unknown option '$1' (see --help)" ;;
    esac
  done
  local args=(run "$model" --data "${DATA:-real}" --scenario "${SCENARIO:-Offline}" --mode "${MODE:-accuracy}"
              --data_type "${DATA_TYPE:-fp32}" --device "${DEVICE:-cpu}" --partition_offset "$offset")
  # Under torchrun every rank runs one partition on K devices: N_DEVICES / K processes per node.
  local per="${DEVICES_PER_PARTITION:-1}"
  if [ "$per" != 1 ]; then args+=(--devices_per_partition "$per"); fi
  if [ "$launcher" = local ]; then args+=(--n_devices "$n_devices");
  elif [ "$per" != 1 ]; then args+=(--n_devices "$per"); n_devices=$(( n_devices / per )); fi
  if [ -n "$n_count" ]; then args+=(--n_count "$n_count"); fi
  if [ -n "$n_partitions" ]; then args+=(--n_partitions "$n_partitions"); fi
  if [ -n "${BATCH_SIZE:-}" ]; then args+=(--batch_size "$BATCH_SIZE"); fi
  if [ -n "${BACKEND:-}" ]; then args+=(--backend "$BACKEND"); fi
  if [ -n "${SERVER_URL:-}" ]; then args+=(--server_url "$SERVER_URL"); fi
  if [ -n "${LOG_PATH:-}" ]; then args+=(--log_path "$LOG_PATH"); fi
  if [ -n "${ACCURACY_TARGET:-}" ]; then args+=(--accuracy_target "$ACCURACY_TARGET"); fi
  if [ -n "${USER_CONF:-}" ]; then args+=(--user_conf "$USER_CONF"); fi
  # LoadGen user.conf knobs (performance runs); unset = LoadGen's defaults
  if [ -n "${TARGET_QPS:-}" ]; then args+=(--target_qps "$TARGET_QPS"); fi
  if [ -n "${TARGET_LATENCY:-}" ]; then args+=(--target_latency "$TARGET_LATENCY"); fi
  if [ -n "${MIN_DURATION:-}" ]; then args+=(--min_duration "$MIN_DURATION"); fi
  if [ -n "${MIN_QUERY_COUNT:-}" ]; then args+=(--min_query_count "$MIN_QUERY_COUNT"); fi
  if [ -n "${INIT_TIMEOUT:-}" ]; then args+=(--init_timeout "$INIT_TIMEOUT"); fi
  if [ -n "${DIST_TIMEOUT:-}" ]; then args+=(--dist_timeout "$DIST_TIMEOUT"); fi
  local resume="" v a
  for v in "${RUN_VARS[@]}"; do
    if [ -n "${!v:-}" ]; then resume+="$v=$(printf %q "${!v}") "; fi
  done
  resume+="$(printf %q "$0")"
  for a in "${orig[@]}"; do resume+=" $(printf %q "$a")"; done
  export EVALKIT_RESUME_CMD="$resume"
  case "$launcher" in
    local)
      if [ "${DRY_RUN:-0}" = 1 ]; then
        qjoin "$(kit_python "$model")" -m evalkit "${args[@]}" "${extra[@]}"; return 0
      fi
      evalkit "$model" "${args[@]}" "${extra[@]}" ;;
    torchrun) torchrun_model "$model" "$n_devices" "${args[@]}" "${extra[@]}" ;;
    *) die "LAUNCHER=$launcher (or --launcher) is not one of local, torchrun" ;;
  esac
}

# torchrun_model MODEL NPROC EVALKIT_ARGS...: the kit under torchrun, one node of NNODES.
# One node without MASTER_ADDR: --standalone; else a static rendezvous at MASTER_ADDR:MASTER_PORT
# (node ranks fixed, so a resumed run finds each partition on the node that has it).
torchrun_model() {
  local model="$1" nproc="$2"; shift 2
  local nnodes="${NNODES:-1}" init_timeout="${INIT_TIMEOUT:-300}" trun
  trun="$(env_path "$model")/bin/torchrun"
  [ -x "$trun" ] || die "no torchrun in $(env_path "$model"); run scripts/build_${model}_env.sh first"
  [[ "$nnodes" =~ ^[1-9][0-9]*$ ]] || die "NNODES=$nnodes is not a positive integer"
  [[ "$init_timeout" =~ ^[1-9][0-9]*$ ]] || die "INIT_TIMEOUT=$init_timeout is not a whole number of seconds"
  local cmd=("$trun" --nnodes "$nnodes" --nproc-per-node "$nproc" --max-restarts 0) standalone=0
  if [ "$nnodes" = 1 ] && [ -z "${MASTER_ADDR:-}" ]; then
    cmd+=(--standalone); standalone=1
  else
    [ -n "${MASTER_ADDR:-}" ] || die "NNODES=$nnodes needs MASTER_ADDR (the host of node rank 0)"
    [ -n "${NODE_RANK:-}" ] || die "NNODES=$nnodes needs NODE_RANK (0..$((nnodes - 1)), this node's)"
    cmd+=(--node-rank "$NODE_RANK" --master-addr "$MASTER_ADDR" --master-port "${MASTER_PORT:-29500}"
          --rdzv-conf "timeout=$init_timeout")
  fi
  cmd+=(-m evalkit "$@")
  if [ "${DRY_RUN:-0}" = 1 ]; then qjoin "${cmd[@]}"; return 0; fi
  export PYTHONPATH="$KIT_ROOT${PYTHONPATH:+:$PYTHONPATH}"
  if [ "$standalone" = 0 ] && [ "$nnodes" != 1 ]; then
    # Every node checks in at node 0 first, all within INIT_TIMEOUT, with one error line naming
    # the address: torchrun's own store client retries past its timeout (300 s took 10 min 44 s).
    "$(kit_python "$model")" -m evalkit.rendezvous --addr "$MASTER_ADDR" --port "${MASTER_PORT:-29500}" \
      --nnodes "$nnodes" --node_rank "$NODE_RANK" --timeout "$init_timeout" || exit $?
  fi
  "${cmd[@]}"
}
