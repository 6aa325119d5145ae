#!/usr/bin/env bash
# Create the project's virtual environment with the system Python.
# Debian splits `venv`/`ensurepip` into python3-venv: install it when we can.
set -euo pipefail
python="${1:-python3}"
venv="${2:-.venv}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: $python not found; install Python 3.11 or newer (e.g. apt-get install python3)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "error: Python 3.11 or newer is required, $python is $("$python" --version 2>&1)" >&2
    exit 1
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        minor="$("$python" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${minor}-venv" || \
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    else
        echo "error: Python's venv module is missing; install it (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24" setuptools wheel
