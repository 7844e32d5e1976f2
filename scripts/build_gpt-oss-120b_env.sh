#!/usr/bin/env bash
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
build_env gpt-oss-120b "$@"
# LiveCodeBench programs run only inside bubblewrap (evalkit/sandbox.py); without it `check` reports
# LiveCodeBench INCOMPLETE (never PASS). Root gets it installed here, anyone else the command to run.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing bubblewrap (the LiveCodeBench sandbox)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap
  else
    say "LiveCodeBench runs its programs in bubblewrap, not installed here: sudo apt-get install -y bubblewrap" \
        "(until then check reports LiveCodeBench INCOMPLETE)"
  fi
fi
