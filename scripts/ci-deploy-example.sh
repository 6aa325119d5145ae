#!/usr/bin/env bash
# Worked example: restart Lunara from a CI job and fail the job unless it comes back healthy.
#
# Needs: a checkout on the bot's host (or a runner with access to its LUNARA_HOME), and
# LUNARA_TOKEN holding a raw token whose sha256 is a `token:<name>` principal with the
# `ci` role in manifest.json (bot.start, bot.stop, bot.restart, bot.status).
# Every call is audited under that principal (`lunara audit`).
set -euo pipefail

: "${LUNARA_TOKEN:?set LUNARA_TOKEN to the CI token (a secret of the CI system)}"
PYTHON="${PYTHON:-.venv/bin/python}"
WAIT_S="${WAIT_S:-60}"

trigger() { "$PYTHON" trigger.py "$@"; }

# 1. Is a bot running now? 0 running+healthy, 3 stopped, 5 unhealthy; anything else is fatal.
set +e
trigger status --quiet
before=$?
set -e
case "$before" in
  0) echo "running and healthy: restarting" ;;
  3) echo "not running: starting" ;;
  5) echo "running but unhealthy: restarting" ;;
  4) echo "the token may not read the status (exit 4): check manifest.json" >&2; exit 4 ;;
  6) echo "manifest or configuration invalid (exit 6)" >&2; exit 6 ;;
  *) echo "status failed with exit $before" >&2; exit "$before" ;;
esac

# 2. (Re)start and wait for the first heartbeat; exit 7 means it did not come up.
set +e
if [ "$before" -eq 3 ]; then
  result=$(trigger start --wait "$WAIT_S" --json)
else
  result=$(trigger restart --wait "$WAIT_S" --json)
fi
code=$?
set -e
if [ "$code" -ne 0 ]; then
  echo "lifecycle command failed with exit $code" >&2
  trigger logs --lines 50 || true
  exit "$code"
fi

# 3. Read the --json result: fields are added over time, never renamed.
"$PYTHON" - "$result" <<'PY'
import json
import sys

result = json.loads(sys.argv[1])
status = result.get("status", result)
print(f"state={status['state']} pid={status['pid']} restarts={status['restarts']}")
sys.exit(0 if status["state"] == "running" else 1)
PY

# 4. Final gate: the exit code alone says healthy or not.
trigger status --quiet
