#!/usr/bin/env bash
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
build_env mixtral "$@"
# MBXP runs the generated programs only inside bubblewrap (evalkit/sandbox.py); without it `check`
# reports MBXP INCOMPLETE. Root gets it installed here, anyone else the command to run.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing bubblewrap (the MBXP sandbox)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap
  else
    say "MBXP runs its programs in bubblewrap, not installed here: sudo apt-get install -y bubblewrap" \
        "(until then check reports MBXP INCOMPLETE)"
  fi
fi
# MBXP's node languages need the pinned npm packages (lodash for every JavaScript test, typescript's tsc)
# in the env (<env>/mbxp-node): language/mixtral/mbxp.py installs them, the same function `make test` runs.
# Without them `check` reports MBXP INCOMPLETE with the one command that installs them.
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing npm (MBXP's JavaScript and TypeScript programs)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm
fi
if ! PYTHONPATH="$KIT_ROOT" "$(env_path mixtral)/bin/python" -m language.mixtral.mbxp install-node; then
  say "MBXP's JavaScript and TypeScript programs cannot run until that is done (check reports MBXP INCOMPLETE)"
fi
