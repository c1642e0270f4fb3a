#!/usr/bin/env bash
# The PostgreSQL provisioning demo (see demo_postgres_provisioning.py). Needs a running server:
#   innominatus serve --dev      (or set INNOMINATUS_SERVER / INNOMINATUS_TOKEN)
set -euo pipefail
exec python3 "$(dirname "$0")/demo_postgres_provisioning.py" "$@"
