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
# RubyGems end-to-end tests: Debian's ruby (gem) and bundler.
need "ruby --version" ruby
need "gem --version" ruby
need "bundle --version" bundler
# Packagist end-to-end tests: Debian's composer and the PHP it runs on, with zip and curl.
need "composer --version" composer
need "php --version" php-cli
need "php -m | grep -qx zip" php-zip
need "php -m | grep -qx curl" php-curl
need "unzip -v" unzip

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "test tools present: python3, pip, venv, ruby, gem, bundle, composer, php, unzip"
fi

# --- npm end-to-end tests: Node and npm from Debian when missing, then yarn v1 and pnpm from the
# npm registry into target/test-tools/ (project-local: the tests never use global copies). The
# pnpm major must run on the machine's Node (pnpm 12 needs Node >= 18).
YARN_VERSION=1.22.22
PNPM_VERSION=12.21.0
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/target/test-tools"

if ! node --version >/dev/null 2>&1 || ! npm --version >/dev/null 2>&1; then
  echo "installing: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm
fi

tool_version() { # tool_version NAME: the installed project-local version, or nothing
  "$tools/node_modules/.bin/$1" --version 2>/dev/null || true
}
if [[ "$(tool_version yarn)" == "$YARN_VERSION" && "$(tool_version pnpm)" == "$PNPM_VERSION" ]]; then
  echo "test tools present: yarn $YARN_VERSION, pnpm $PNPM_VERSION in target/test-tools"
else
  echo "installing into target/test-tools: yarn@$YARN_VERSION pnpm@$PNPM_VERSION"
  mkdir -p "$tools"
  # Run from the tools dir so no project .npmrc applies; the registry is the machine's npm default.
  (cd "$tools" && npm install --no-save --prefix "$tools" --no-audit --no-fund \
    --no-update-notifier --no-package-lock "yarn@$YARN_VERSION" "pnpm@$PNPM_VERSION")
  [[ "$(tool_version yarn)" == "$YARN_VERSION" ]] || { echo "yarn $YARN_VERSION did not install" >&2; exit 1; }
  [[ "$(tool_version pnpm)" == "$PNPM_VERSION" ]] || { echo "pnpm $PNPM_VERSION did not install" >&2; exit 1; }
fi

# --- uv (PyPI concurrency tests): a pinned uv from the PyPI registry into its own venv under
# target/test-tools/uv (project-local, like yarn and pnpm). uv ships as a wheel with its binary.
UV_VERSION=0.13.9
uv_bin="$tools/uv/bin/uv"
if [[ "$("$uv_bin" --version 2>/dev/null || true)" == "uv $UV_VERSION"* ]]; then
  echo "test tools present: uv $UV_VERSION in target/test-tools/uv"
else
  echo "installing into target/test-tools/uv: uv==$UV_VERSION"
  rm -rf "$tools/uv"
  python3 -m venv "$tools/uv"
  "$tools/uv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  [[ "$("$uv_bin" --version 2>/dev/null || true)" == "uv $UV_VERSION"* ]] || { echo "uv $UV_VERSION did not install" >&2; exit 1; }
fi

# --- Rust tools scripts/test.sh runs besides cargo's own: cargo-deny (bans, licences, sources)
# and cargo-machete (unused dependencies), from the Rust crate registry at pinned versions, each
# built once with its own lockfile. They live outside the checkout (PMCACHE_CARGO_TOOLS, by
# default in the user's cache directory) so that a fresh clone, as CI makes, does not compile
# them again: cargo-deny alone takes several minutes on two cores.
CARGO_DENY_VERSION=0.20.2
CARGO_MACHETE_VERSION=0.9.2
cargo_root="${PMCACHE_CARGO_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/pmcache/cargo-tools}"
cargo_tool() { # cargo_tool CRATE VERSION: installs CRATE at VERSION unless exactly that runs
  local found
  found=$("$cargo_root/bin/$1" --version 2>/dev/null || true)
  if [[ $found == "$2" || $found == "$1 $2" ]]; then
    echo "test tools present: $1 $2 in $cargo_root"
  else
    echo "installing into $cargo_root: $1 $2"
    # --force: cargo's record of installed crates may outlive a binary removed since.
    cargo install --locked --quiet --force --root "$cargo_root" "$1" --version "$2"
    found=$("$cargo_root/bin/$1" --version 2>/dev/null || true)
    [[ $found == "$2" || $found == "$1 $2" ]] || { echo "$1 $2 did not install" >&2; exit 1; }
  fi
}
cargo_tool cargo-deny "$CARGO_DENY_VERSION"
cargo_tool cargo-machete "$CARGO_MACHETE_VERSION"
