#!/usr/bin/env bash
# Install what the agent needs (idempotent), then run it in the foreground on
# the default database (/var/lib/lumen-agent/lumen.duckdb as root).
# Extra arguments go to `lumen-agent run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# As the unit's UMask=0077: the database, recording and dead-letter file are
# the agent's alone (docs/service.md).
umask 077
exec .venv/bin/lumen-agent run "$@"
