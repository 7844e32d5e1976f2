#!/usr/bin/env bash
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
eval_model deepseek-r1 "$@"
