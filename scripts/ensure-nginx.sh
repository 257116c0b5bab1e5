#!/usr/bin/env bash
# nginx is the Fleet-only gateway of a deployment (tests/test_gateway.py starts it).
# Install Debian's nginx-light when it is missing and we can (root + apt-get); otherwise say
# once why the gateway tests will be skipped (.ci/run turns those skips into failures).
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light >/dev/null; }
    echo "installed nginx-light (Fleet-only gateway for the deployment tests)"
else
    echo "nginx missing and not installable here (needs root and apt-get): gateway tests will be skipped"
fi
