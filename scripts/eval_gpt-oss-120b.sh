#!/usr/bin/env bash
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
eval_model gpt-oss-120b "$@"
