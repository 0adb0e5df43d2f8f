#!/usr/bin/env bash
# The README's second command: run the whole test suite in the environment scripts/setup.sh made.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec python -m pytest test "$@"
