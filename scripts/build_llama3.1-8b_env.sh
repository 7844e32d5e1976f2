#!/usr/bin/env bash
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
build_env llama3.1-8b "$@"
