#!/usr/bin/env bash
# Latency of a warm 1.5 KB file (and a small project page): pmcache vs nginx, same bytes.
#
# Usage: bench/warm-small-file.sh [-h|--help]
#
# A tiny PyPI upstream (python3 -m http.server on 127.0.0.1) serves one PEP 503 page and a
# 1.5 KB file with its sha256. pmcache is warmed on both, nginx is given pmcache's exact answers
# as static files, and bench/http_latency.py times each GET one by one over kept-alive
# connections: first sequentially on one connection, then on several at once. A small answer
# that a server sends in two writes without TCP_NODELAY waits for the client's delayed ACK
# (~40 ms on Linux): that shows in p90/p99/max. Everything listens on 127.0.0.1 only and every
# process started here is stopped on exit. See bench/README.md.
#
# Environment (all optional):
#   PMCACHE_BIN            pmcache binary to use; default: `cargo build --release --locked`
#   BENCH_REQUESTS         timed GETs per run                           (default 2000)
#   BENCH_CONNECTIONS      connections of the concurrent run            (default 8)
#   BENCH_FILE_BYTES       size of the file                             (default 1536)
#   BENCH_CASES            what to time: file, page                     (default "file page")
#   BENCH_STARTUP_TIMEOUT  seconds to wait for each server to listen    (default 60)
#   BENCH_RESULTS          also write the results as TSV to this file
#   BENCH_KEEP_TMP=1       keep the temp dir (logs, bodies, nginx.conf) for inspection
#   BENCH_NO_INSTALL=1     never run apt-get; fail if nginx is missing

set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
    exit 0
fi
if [[ $# -gt 0 ]]; then
    echo "usage: $0 [-h|--help]  (configure with environment variables, see --help)" >&2
    exit 2
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

REQUESTS=${BENCH_REQUESTS:-2000}
CONNECTIONS=${BENCH_CONNECTIONS:-8}
FILE_BYTES=${BENCH_FILE_BYTES:-1536}
CASES=${BENCH_CASES:-file page}
STARTUP_TIMEOUT=${BENCH_STARTUP_TIMEOUT:-60}
PROJECT=demo-small
FILENAME=demo-small-1.0.tar.gz
# What pip sends for a project page.
PIP_ACCEPT='application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01'

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for c in $CASES; do
    case $c in file | page) ;; *) die "BENCH_CASES may hold only file and page" ;; esac
done
[[ $REQUESTS =~ ^[0-9]+$ && $REQUESTS -ge 100 && $REQUESTS -le 100000 ]] ||
    die "BENCH_REQUESTS must be 100..100000"
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -ge 2 && $CONNECTIONS -le 64 ]] ||
    die "BENCH_CONNECTIONS must be 2..64"
[[ $FILE_BYTES =~ ^[0-9]+$ && $FILE_BYTES -ge 1 && $FILE_BYTES -le 65536 ]] ||
    die "BENCH_FILE_BYTES must be 1..65536"

# --- cleanup -------------------------------------------------------------------------------

WORK=""
PIDS=()        # every process started here, in start order
PORTS=()       # every port something of ours listened on
POLICY_RC_D="" # set while we keep apt from starting services
SUDO=""

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 10 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? i port
    set +e
    trap - EXIT INT TERM
    if [[ -n $POLICY_RC_D ]]; then
        $SUDO rm -f "$POLICY_RC_D"
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    for port in "${PORTS[@]}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            log "warning: something still listens on 127.0.0.1:$port"
        fi
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $status == 1 && -s $WORK/pmcache.err ]]; then
            log "last lines of pmcache's log:"
            tail -n 10 "$WORK/pmcache.err" >&2
        fi
        if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls `$@` until it succeeds or `timeout` seconds pass; fails early if `pid` dies.
wait_for() {
    local what=$1 timeout=$2 pid=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            die "$what exited before it was ready${WAIT_LOG:+: $(tail -n 5 "$WAIT_LOG" 2>/dev/null)}"
        fi
        ((SECONDS < deadline)) || die "$what not ready after ${timeout}s"
        sleep 0.2
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- 1. tools ------------------------------------------------------------------------------

install_tools() {
    local missing=()
    command -v python3 >/dev/null || die "python3 is required"
    command -v curl >/dev/null || missing+=(curl)
    if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
        missing+=(nginx)
    fi
    if ((${#missing[@]} > 0)); then
        [[ ${BENCH_NO_INSTALL:-0} != 1 ]] || die "missing: ${missing[*]} (BENCH_NO_INSTALL=1)"
        if [[ $(id -u) != 0 ]]; then
            command -v sudo >/dev/null || die "missing ${missing[*]}: install them or run as root"
            SUDO=sudo
        fi
        log "installing ${missing[*]} from Debian"
        # Debian's nginx package starts the system nginx on port 80 when installed; a
        # policy-rc.d answering 101 keeps it stopped (only ours runs, on 127.0.0.1).
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            POLICY_RC_D=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY_RC_D" >/dev/null
            $SUDO chmod 755 "$POLICY_RC_D"
        fi
        $SUDO env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q >&2 ||
            die "apt-get update failed"
        $SUDO env DEBIAN_FRONTEND=noninteractive timeout 900 \
            apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
            die "apt-get install ${missing[*]} failed"
        if [[ -n $POLICY_RC_D ]]; then
            $SUDO rm -f "$POLICY_RC_D"
            POLICY_RC_D=""
        fi
    fi
    PATH=$PATH:/usr/sbin
    command -v nginx >/dev/null || die "nginx not found after install"
}

# --- 2. pmcache ----------------------------------------------------------------------------

build_pmcache() {
    if [[ -n ${PMCACHE_BIN:-} ]]; then
        [[ -x $PMCACHE_BIN ]] || die "PMCACHE_BIN=$PMCACHE_BIN is not an executable"
        return
    fi
    command -v cargo >/dev/null || die "cargo not found (or set PMCACHE_BIN)"
    log "cargo build --release --locked (first build takes several minutes on 2 cores)"
    (cd "$ROOT" && cargo build --release --locked >&2) || die "cargo build --release failed"
    local target
    target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    [[ -x $target/release/pmcache ]] || die "no binary at $target/release/pmcache after the build"
    # A copy: another build in the same target dir cannot swap it during the run.
    cp "$target/release/pmcache" "$WORK/pmcache"
    PMCACHE_BIN=$WORK/pmcache
}

# --- 3. upstream ---------------------------------------------------------------------------

start_upstream() {
    local dir=$WORK/upstream
    mkdir -p "$dir/simple/$PROJECT" "$dir/files"
    # Deterministic bytes of the asked size (a sha256 chain), and the PEP 503 page naming them.
    python3 - "$dir/files/$FILENAME" "$FILE_BYTES" <<'EOF'
import hashlib, sys
path, size = sys.argv[1], int(sys.argv[2])
data, block = b"", b"pmcache warm-small-file"
while len(data) < size:
    block = hashlib.sha256(block).digest()
    data += block
open(path, "wb").write(data[:size])
EOF
    FILE_SHA256=$(sha256sum "$dir/files/$FILENAME" | cut -d' ' -f1)
    cat >"$dir/simple/$PROJECT/index.html" <<EOF
<!DOCTYPE html>
<html><head><meta name="pypi:repository-version" content="1.0"><title>Links for $PROJECT</title></head>
<body><h1>Links for $PROJECT</h1>
<a href="/files/$FILENAME#sha256=$FILE_SHA256">$FILENAME</a><br>
</body></html>
EOF
    python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$dir" >"$WORK/upstream.log" 2>&1 &
    UPSTREAM_PID=$!
    PIDS+=("$UPSTREAM_PID")
    WAIT_LOG=$WORK/upstream.log wait_for "upstream static server" "$STARTUP_TIMEOUT" "$UPSTREAM_PID" \
        grep -qs 'Serving HTTP on .* port [0-9]' "$WORK/upstream.log"
    UPSTREAM_PORT=$(sed -n 's/^Serving HTTP on .* port \([0-9]*\).*/\1/p' "$WORK/upstream.log" | head -n1)
    PORTS+=("$UPSTREAM_PORT")
    UPSTREAM=http://127.0.0.1:$UPSTREAM_PORT/simple/
    log "upstream: $UPSTREAM ($FILENAME, $FILE_BYTES bytes, sha256 ${FILE_SHA256:0:16}…)"
}

start_pmcache() {
    mkdir -p "$WORK/pmcache-data"
    # PMCACHE_BIN is the script's, not a setting. Request logs are off on both sides (nginx:
    # access_log off; pmcache: warn level) unless PMCACHE_LOG_FILTER says otherwise.
    env -u PMCACHE_BIN \
        PMCACHE_LOG_FILTER="${PMCACHE_LOG_FILTER:-warn}" \
        PMCACHE_PYPI_UPSTREAM="$UPSTREAM" \
        PMCACHE_PYPI_METADATA_TTL=1h \
        PMCACHE_NPM_ENABLED=false \
        PMCACHE_RUBYGEMS_ENABLED=false \
        PMCACHE_PACKAGIST_ENABLED=false \
        "$PMCACHE_BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/pmcache-data" \
        >"$WORK/pmcache.out" 2>"$WORK/pmcache.err" &
    PMCACHE_PID=$!
    PIDS+=("$PMCACHE_PID")
    WAIT_LOG=$WORK/pmcache.err wait_for pmcache "$STARTUP_TIMEOUT" "$PMCACHE_PID" \
        grep -qs '^pmcache listening on http://127\.0\.0\.1:[0-9]' "$WORK/pmcache.out"
    PMCACHE_PORT=$(sed -n 's|^pmcache listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' \
        "$WORK/pmcache.out" | head -n1)
    PORTS+=("$PMCACHE_PORT")
    PMCACHE_BASE=http://127.0.0.1:$PMCACHE_PORT
    log "pmcache: $PMCACHE_BASE ($PMCACHE_BIN)"
}

# --- 4. warm pmcache, then nginx with the same bytes ------------------------------------------

# GET with pip's Accept header (pages) or none (files). fetch URL BODY HEADERS -> status
fetch() {
    curl -sS --max-time 30 -H "Accept: $PIP_ACCEPT" -H 'Accept-Encoding: identity' \
        -o "$2" -D "$3" -w '%{http_code}' "$1"
}

cache_header() { tr -d '\r' <"$1" | awk -F': ' 'tolower($1) == "x-pmcache-cache" { v = $2 } END { print v }'; }

warm_pmcache() {
    local code page_url file_path
    mkdir -p "$WORK/bodies"
    PAGE_PATH=/pypi/simple/$PROJECT/
    page_url=$PMCACHE_BASE$PAGE_PATH
    code=$(fetch "$page_url" "$WORK/bodies/page.fill" "$WORK/bodies/page.fill.h") || die "GET $page_url failed"
    [[ $code == 200 ]] || die "GET $page_url answered $code: $(head -c 300 "$WORK/bodies/page.fill")"
    # The file's path as pmcache rewrote it into the page (PEP 691 JSON: files[0].url).
    file_path=$(python3 - "$WORK/bodies/page.fill" "$page_url" <<'EOF'
import json, sys, urllib.parse
page = json.load(open(sys.argv[1], "rb"))
print(urllib.parse.urlsplit(urllib.parse.urljoin(sys.argv[2], page["files"][0]["url"])).path)
EOF
    ) || die "pmcache's page is not the PEP 691 JSON expected: $(head -c 300 "$WORK/bodies/page.fill")"
    FILE_PATH=$file_path
    code=$(fetch "$PMCACHE_BASE$FILE_PATH" "$WORK/bodies/file.fill" "$WORK/bodies/file.fill.h") ||
        die "GET $FILE_PATH failed"
    [[ $code == 200 ]] || die "GET $FILE_PATH answered $code"
    # The bodies nginx will serve: pmcache's warm answers, which must be cache hits by now.
    for c in page file; do
        local path=$PAGE_PATH
        [[ $c == file ]] && path=$FILE_PATH
        code=$(fetch "$PMCACHE_BASE$path" "$WORK/bodies/$c" "$WORK/bodies/$c.h") || die "GET $path failed"
        [[ $code == 200 ]] || die "warm GET $path answered $code"
        [[ $(cache_header "$WORK/bodies/$c.h") == hit ]] ||
            die "warm GET $path was not a cache hit: x-pmcache-cache $(cache_header "$WORK/bodies/$c.h")"
    done
    [[ $(sha256sum <"$WORK/bodies/file" | cut -d' ' -f1) == "$FILE_SHA256" ]] ||
        die "pmcache served other bytes than the upstream's file"
    log "warm: file $FILE_PATH ($(stat -c %s "$WORK/bodies/file") bytes)," \
        "page $PAGE_PATH ($(stat -c %s "$WORK/bodies/page") bytes, JSON)"
}

start_nginx() {
    local www=$WORK/www dir=$WORK/nginx user_line=""
    mkdir -p "$www$FILE_PATH" "$www$PAGE_PATH" "$dir/tmp"
    rmdir "$www$FILE_PATH"
    cp "$WORK/bodies/file" "$www$FILE_PATH"
    cp "$WORK/bodies/page" "$www${PAGE_PATH}index.html"
    NGINX_PORT=$(free_port)
    # Workers drop to an unprivileged user when the master is root; ours must read the temp dir.
    [[ $(id -u) != 0 ]] || user_line="user root;"
    cat >"$dir/nginx.conf" <<EOF
# Generated by bench/warm-small-file.sh: a static copy of pmcache's warm answers.
daemon off;
$user_line
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 1024;
}
http {
    types {}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/client;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $www;
    }
}
EOF
    nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/test.log" ||
        die "nginx -t: $(cat "$dir/test.log")"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    PORTS+=("$NGINX_PORT")
    NGINX_BASE=http://127.0.0.1:$NGINX_PORT
    WAIT_LOG=$dir/error.log wait_for nginx "$STARTUP_TIMEOUT" "$NGINX_PID" \
        curl -sf --max-time 5 -o /dev/null "$NGINX_BASE$FILE_PATH"
    log "nginx: $NGINX_BASE ($(nginx -v 2>&1 | sed 's/.*: //'), worker_processes auto)"
}

verify_same_bytes() {
    local c path code
    for c in $CASES; do
        path=$PAGE_PATH
        [[ $c == file ]] && path=$FILE_PATH
        code=$(fetch "$NGINX_BASE$path" "$WORK/bodies/$c.nginx" "$WORK/bodies/$c.nginx.h") ||
            die "GET $path from nginx failed"
        [[ $code == 200 ]] || die "nginx answered $code for $path"
        cmp -s "$WORK/bodies/$c" "$WORK/bodies/$c.nginx" || die "nginx serves other bytes for $path"
    done
}

# --- 5. measure ----------------------------------------------------------------------------

# Percent of all CPUs busy during one second: other work on the machine skews every figure.
busy_percent() {
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]
        printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}

run_client() { # run_client CASE SERVER BASE CONNECTIONS
    local path=$PAGE_PATH sha out busy
    sha=$(sha256sum <"$WORK/bodies/$1" | cut -d' ' -f1)
    [[ $1 == file ]] && path=$FILE_PATH
    busy=$(busy_percent)
    log "$1 from $2: $REQUESTS GETs on $4 connection(s) (CPU busy before: ${busy}%)"
    out=$(timeout 600 python3 "$HERE/http_latency.py" "$3$path" --requests "$REQUESTS" \
        --connections "$4" --header "Accept: $PIP_ACCEPT" --sha256 "$sha") ||
        die "the client failed against $2 ($1, $4 connections): $out"
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$4" "$out" "$busy" >>"$WORK/results.tsv"
}

report() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    echo
    echo "warm small answers: $REQUESTS GETs per run, each timed, kept-alive HTTP/1.1, loopback"
    echo "  file: $FILENAME, $(stat -c %s "$WORK/bodies/file") bytes; page: PEP 691 JSON," \
        "$(stat -c %s "$WORK/bodies/page") bytes"
    echo "  machine: $(nproc) cores${cpu:+ ($cpu)}, $(uname -sr)"
    echo "  pmcache: $PMCACHE_BIN; nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), worker_processes auto"
    echo
    {
        printf 'case\tserver\tconnections\trequests\terrors\tmean ms\tp50 ms\tp90 ms\tp99 ms\tmax ms\tbusy%%\n'
        cat "$WORK/results.tsv"
    } | column -t -s $'\t'
    echo
    awk -F'\t' '
        { p50[$1, $3, $2] = $7; p99[$1, $3, $2] = $9; key = $1 "\t" $3; if (!seen[key]++) order[++k] = key }
        END {
            print "pmcache / nginx:"
            for (i = 1; i <= k; i++) {
                split(order[i], f, "\t")
                if (p99[f[1], f[2], "nginx"] == 0 || p50[f[1], f[2], "nginx"] == 0) continue
                printf "  %-4s on %2d connection(s): p50 %.2fx   p99 %.2fx\n", f[1], f[2],
                    p50[f[1], f[2], "pmcache"] / p50[f[1], f[2], "nginx"],
                    p99[f[1], f[2], "pmcache"] / p99[f[1], f[2], "nginx"]
            }
        }' "$WORK/results.tsv"
    if awk -F'\t' '$11 > 20 { bad = 1 } END { exit !bad }' "$WORK/results.tsv"; then
        echo "warning: the machine was busy before some runs (busy% column): other work skews these figures"
    fi
    if [[ -n ${BENCH_RESULTS:-} ]]; then
        {
            printf 'case\tserver\tconnections\trequests\terrors\tmean_ms\tp50_ms\tp90_ms\tp99_ms\tmax_ms\tbusy_before_pct\n'
            cat "$WORK/results.tsv"
        } >"$BENCH_RESULTS"
    fi
}

main() {
    install_tools
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/pmcache-bench.XXXXXX")
    build_pmcache
    start_upstream
    start_pmcache
    warm_pmcache
    start_nginx
    verify_same_bytes
    : >"$WORK/results.tsv"
    local c connections
    for c in $CASES; do
        for connections in 1 "$CONNECTIONS"; do
            run_client "$c" pmcache "$PMCACHE_BASE" "$connections"
            run_client "$c" nginx "$NGINX_BASE" "$connections"
        done
    done
    if ! kill -0 "$PMCACHE_PID" 2>/dev/null; then die "pmcache died during the run"; fi
    report
}

main
