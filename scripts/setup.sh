#!/usr/bin/env bash
# The system packages the tests need beside Python: Debian's redis-server and postgresql, for the
# distributed test (a real Dagster instance on PostgreSQL, a Celery broker on Redis). Idempotent and
# non-interactive: installs only what is missing; where apt-get is unavailable it says what to install
# and exits 0, so the Python tests still run (that test then skips, or fails when CI=true).
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Debian's chromium, for the search page's browser test (tests/test_browser.py; Playwright drives it).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# Debian's postgresql puts initdb/pg_ctl under /usr/lib/postgresql/<version>/bin, off the PATH.
if ! command -v pg_ctl >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; then
    missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: redis-server and postgresql are installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: apt-get is not available; install ${missing[*]} with this system's package manager" \
        "for the distributed test (tests/test_distributed.py), or it is skipped (a failure when CI=true)" >&2
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo -n)
    else
        echo "setup: not root and no sudo: install ${missing[*]} as root (apt-get install ${missing[*]})" >&2
        exit 0
    fi
fi

echo "setup: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# The packages' own services are not needed: the tests start their own servers on free loopback ports.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: installed ${missing[*]}"
