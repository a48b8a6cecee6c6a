#!/usr/bin/env bash
# Installs, idempotently, the system tools the end-to-end tests drive. Safe to run again: it only
# installs what is missing. Debian packages come from apt-get (run as root, as CI does).
set -euo pipefail

missing=()
need() { # need COMMAND-CHECK DEBIAN-PACKAGE
  if ! eval "$1" >/dev/null 2>&1; then missing+=("$2"); fi
}

need "python3 --version" python3
need "python3 -m pip --version" python3-pip
need "python3 -m venv --help" python3-venv

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "test tools present: python3, pip, venv"
fi
