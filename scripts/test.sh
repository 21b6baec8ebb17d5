#!/usr/bin/env bash
# Install what the tests need (idempotent), lint, then run the whole test suite.
# The eBPF tests need root; as another user they are skipped with a reason.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
# Lint and import order first: cheap, and a linter catches what tests miss
# (a shadowed function, an unused import).
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -ra "$@"
