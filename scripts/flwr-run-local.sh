#!/usr/bin/env bash
# `flwr run .` on Flower's local simulation federation, done safely:
# - no runtime re-install of dependencies (it would pull CUDA torch),
# - one virtual CPU per simulated hospital (so two train at once on 2 cores),
# - the detached local SuperLink that `flwr run` starts is stopped afterwards (and only it:
#   it is found by the FLWR_HOME path in its command line).
# Usage: scripts/flwr-run-local.sh [NUM_SITES] [extra `flwr run` arguments…]
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export FLWR_HOME="${FLWR_HOME:-$repo/.flwr-home}"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export PATH="$repo/.venv/bin:$PATH"
sites="${1:-3}"
shift || true
cd "$repo"
flwr run . --federation-config "num-supernodes=$sites client-resources-num-cpus=1" --stream "$@"
status=$?
pattern="--log-file $FLWR_HOME/local-superlink/superlink.log"
for pid in $(pgrep -f -- "$pattern"); do
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do  # up to 10 s for a clean shutdown, then force it
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo gone)
    [ "$state" = gone ] || [ "$state" = Z ] && break
    sleep 0.2
  done
  [ "$state" = gone ] || [ "$state" = Z ] || kill -9 "$pid" 2>/dev/null
done
exit $status
