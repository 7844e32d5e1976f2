# Shared shell logic for scripts/build_<model>_env.sh and scripts/eval_<model>.sh.
# Sourced, never run. Every function fails loudly: callers run under set -euo pipefail.

KIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENV_DIR="${ENV_DIR:-$KIT_ROOT/.envs}"

die() { echo "error: $*" >&2; exit 2; }
say() { echo "[evalkit] $*" >&2; }
# qjoin ARGS...: one line that the shell reads back as exactly these words.
qjoin() { local out; printf -v out '%q ' "$@"; echo "${out% }"; }

env_path() { echo "$ENV_DIR/$1"; }

# closest WORD CANDIDATES...: the candidate nearest WORD (edit distance, case ignored), if it is near
# enough to be a typo (at most a third of WORD's length, at least 1); nothing otherwise.
closest() {
  local word="$1"; shift
  printf '%s\n' "$@" | awk -v w="$word" '
    function dist(a, b,   i, j, la, lb, d, c) {
      la = length(a); lb = length(b)
      for (i = 0; i <= la; i++) d[i, 0] = i
      for (j = 0; j <= lb; j++) d[0, j] = j
      for (i = 1; i <= la; i++) for (j = 1; j <= lb; j++) {
        c = d[i-1, j-1] + (substr(a, i, 1) != substr(b, j, 1))
        if (d[i-1, j] + 1 < c) c = d[i-1, j] + 1
        if (d[i, j-1] + 1 < c) c = d[i, j-1] + 1
        d[i, j] = c
      }
      return d[la, lb]
    }
    BEGIN { best = ""; bd = 1e9; lim = int(length(w) / 3); if (lim < 1) lim = 1 }
    NF { x = dist(tolower(w), tolower($0)); if (x < bd) { bd = x; best = $0 } }
    END { if (bd <= lim) print best }'
}

# unknown_variable NAME VALUE 'REST OF THE MAKE LINE' KNOWN...: the one-line refusal of a command-line
# variable the kit does not read.
unknown_variable() {
  local name="$1" value="$2" rest="$3"; shift 3
  local near; near="$(closest "$name" "$@")"
  [[ "$value" =~ ^[A-Za-z0-9_.,:/=+@%-]*$ ]] || value="$(printf %q "$value")"
  if [ -n "$near" ]; then
    echo "error: unknown variable $name (did you mean $near?); nothing was run"
  else
    echo "error: unknown variable $name: not one of the kit's (\`make help\` lists them); nothing was run." \
         "An environment variable for the model goes before make: \`$name=$value make${rest:+ $rest}\`"
  fi
}

# unknown_target NAME MODEL... -- TARGET...: the one-line answer to `make resnt`.
unknown_target() {
  local name="$1"; shift
  local models=() targets=() near
  while [ $# -gt 0 ] && [ "$1" != -- ]; do models+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  targets=("$@")
  near="$(closest "$name" "${models[@]}" "${targets[@]}")"
  echo "error: no model or target '$name' (${near:+did you mean $near? }models: ${models[*]}; \`make help\` lists the targets)"
}

# check_model MODEL: MODEL is one of the kit's (an env spec envs/MODEL.yml and its scripts), else one line.
check_model() {
  [ -f "$KIT_ROOT/envs/$1.yml" ] && [ -f "$KIT_ROOT/scripts/eval_$1.sh" ] && return 0
  local models=() f near
  for f in "$KIT_ROOT"/scripts/eval_*.sh; do f="${f##*/eval_}"; models+=("${f%.sh}"); done
  near="$(closest "$1" "${models[@]}")"
  die "no model '$1' (${near:+did you mean $near? }models: ${models[*]})"
}

# heartbeat WHAT CMD...: CMD in the foreground (Ctrl-C reaches it), and a line every 30 s
# (EVALKIT_HEARTBEAT_S) saying it is still WHAT, with the time so far: env builds and synthetic
# sets take minutes and print nothing of their own. Returns CMD's exit code.
heartbeat() {
  local what="$1"; shift
  local every="${EVALKIT_HEARTBEAT_S:-30}" start="$SECONDS" rc=0 hb
  (
    n=0 s=""
    trap '[ -z "$s" ] || kill "$s" 2>/dev/null; exit 0' TERM
    while :; do
      sleep "$every" </dev/null >/dev/null 2>&1 & s=$!
      wait "$s" || exit 0
      kill -0 "$$" 2>/dev/null || exit 0   # the script is gone: no orphan keeps talking
      n=$(( n + every ))
      printf '[evalkit] ... still %s (%dm%02ds)\n' "$what" $(( n / 60 )) $(( n % 60 )) >&2
    done
  ) &
  hb=$!
  "$@" || rc=$?
  kill "$hb" 2>/dev/null || true
  wait "$hb" 2>/dev/null || true
  if [ $(( SECONDS - start )) -ge "$every" ]; then say "done: $what ($(( SECONDS - start )) s)"; fi
  return "$rc"
}

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
    say "building venv $target from $spec with $py (pip; a few minutes the first time)"
    heartbeat "creating the venv $tmp" "$py" -m venv --prompt "$(basename "$target")" "$tmp"
    heartbeat "upgrading pip in $tmp" "$tmp/bin/python" -m pip install --quiet --upgrade pip
    # One pip install per step of the spec (envspec.py: `# evalkit: then` starts a new one).
    local steps step i=0 n
    steps="$(python3 "$KIT_ROOT/scripts/lib/envspec.py" pip "$spec")"
    n="$(grep -c . <<< "$steps" || true)"
    while IFS= read -r step; do
      if [ -n "$step" ]; then
        i=$(( i + 1 ))
        say "pip install, step $i/$n of $(basename "$spec"): $(awk '{ print NF }' <<< "$step") packages"
        # shellcheck disable=SC2086
        heartbeat "installing step $i/$n of $(basename "$spec") into $target" "$tmp/bin/python" -m pip install --quiet $step
      fi
    done <<< "$steps"
  else
    say "building $mgr env $target from $spec"
    if [ "$mgr" = micromamba ]; then
      heartbeat "building $target with micromamba" micromamba create --yes -p "$tmp" -f "$spec"
    else
      heartbeat "building $target with $mgr" "$mgr" env create -p "$tmp" -f "$spec"
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
      say "synthetic $model set ($n samples, seed ${SYNTH_SEED:-0}) in data/synthetic/$model"
      heartbeat "making the synthetic $model set" \
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
  ensure_dvc
  evalkit "$1" data pull "$1"
}

# data_preflight ARGS...: `python3 -m evalkit.data ARGS`, the checks that need no env (stdlib only).
data_preflight() {
  PYTHONPATH="$KIT_ROOT${PYTHONPATH:+:$PYTHONPATH}" python3 -m evalkit.data "$@"
}

# ensure_dvc: a dvc the kit finds (evalkit/data.py dvc_executable): on PATH, in the tools env, or in
# .venv; else the tools env (envs/tools.yml: dvc only) is built, not the 2 GB developer env.
ensure_dvc() {
  if command -v dvc >/dev/null 2>&1 || [ -x "$(env_path tools)/bin/dvc" ] || [ -x "$KIT_ROOT/.venv/bin/dvc" ]; then
    return 0
  fi
  say "no dvc on PATH, in $(env_path tools) or .venv: building the tools env (dvc only)"
  make_env "$KIT_ROOT/envs/tools.yml" "$(env_path tools)"
}

# system_tools WHO CMD:PKG...: each missing command's Debian package installed with apt-get (root),
# named before it is; a user who is not root gets the one sudo command instead (exit 2).
# CMD may list alternatives (chromium:chromium-browser:PKG).
system_tools() {
  local who="$1"; shift
  local need=() spec cmds c found
  for spec in "$@"; do
    cmds="${spec%:*}"; found=""
    for c in ${cmds//:/ }; do command -v "$c" >/dev/null 2>&1 && found=1; done
    [ -n "$found" ] || need+=("${spec##*:}")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || die "$who need ${need[*]}, not installed: sudo apt-get install -y ${need[*]}"
  say "$who need ${need[*]}: installing system-wide with apt-get install -y ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
}

# data_cmd MODEL ARGS...: `python -m evalkit data ARGS` in MODEL's env (built first if needed):
# the make targets data_add_/log_/publish_log_ run here, where the model's loader works.
data_cmd() {
  local model="$1"; shift
  check_model "$model"
  make_env "$KIT_ROOT/envs/$model.yml" "$(env_path "$model")"
  ensure_dvc
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
  data_preflight preflight-pull "$model"   # data to pull needs a remote: said before the env is built
}

# Variables that shape a run: recorded in the resume command the kit prints on failure.
RUN_VARS=(DATA SCENARIO MODE N_COUNT N_DEVICES DEVICES_PER_PARTITION N_PARTITIONS PARTITION_OFFSET DATA_TYPE DEVICE BATCH_SIZE
          LOG_PATH ACCURACY_TARGET USER_CONF TARGET_QPS TARGET_LATENCY MIN_DURATION MIN_QUERY_COUNT
          LAUNCHER NNODES NODE_RANK MASTER_ADDR MASTER_PORT INIT_TIMEOUT DIST_TIMEOUT ENV_DIR BACKEND SERVER_URL SERVER_URLS
          QUANTIZER CALIBRATE N_CALIB QUANTIZER_OPTION)

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
  if [ -n "${SERVER_URLS:-}" ]; then args+=(--server_urls "$SERVER_URLS"); fi
  # quantized runs (docs/quantization.md): CALIBRATE=true|false N_CALIB QUANTIZER QUANTIZER_OPTION="K=V K=V"
  if [ -n "${QUANTIZER:-}" ]; then args+=(--quantizer "$QUANTIZER"); fi
  if [ -n "${CALIBRATE:-}" ]; then args+=(--calibrate "$CALIBRATE"); fi
  if [ -n "${N_CALIB:-}" ]; then args+=(--n_calib "$N_CALIB"); fi
  local qopt
  for qopt in ${QUANTIZER_OPTION:-}; do args+=(--quantizer_option "$qopt"); done
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
