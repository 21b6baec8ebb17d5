#!/usr/bin/env bash
# Install what the tests need (idempotent), then run the whole test suite.
# The eBPF tests need root; as another user they are skipped with a reason.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
exec .venv/bin/python -m pytest -ra "$@"
