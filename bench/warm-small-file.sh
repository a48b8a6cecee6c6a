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

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib/harness.sh
. "$HERE/lib/harness.sh"
handle_arguments "$@"

REQUESTS=${BENCH_REQUESTS:-2000}
CONNECTIONS=${BENCH_CONNECTIONS:-8}
FILE_BYTES=${BENCH_FILE_BYTES:-1536}
CASES=${BENCH_CASES:-file page}
STARTUP_TIMEOUT=${BENCH_STARTUP_TIMEOUT:-60}
PROJECT=demo-small
FILENAME=demo-small-1.0.tar.gz
# What pip sends for a project page.
PIP_ACCEPT='application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01'

for c in $CASES; do
    case $c in file | page) ;; *) die "BENCH_CASES may hold only file and page" ;; esac
done
[[ $REQUESTS =~ ^[0-9]+$ && $REQUESTS -ge 100 && $REQUESTS -le 100000 ]] ||
    die "BENCH_REQUESTS must be 100..100000"
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -ge 2 && $CONNECTIONS -le 64 ]] ||
    die "BENCH_CONNECTIONS must be 2..64"
[[ $FILE_BYTES =~ ^[0-9]+$ && $FILE_BYTES -ge 1 && $FILE_BYTES -le 65536 ]] ||
    die "BENCH_FILE_BYTES must be 1..65536"

# --- 1. tools ------------------------------------------------------------------------------

install_tools() {
    local missing=()
    command -v python3 >/dev/null || die "python3 is required"
    command -v curl >/dev/null || missing+=(curl)
    have_nginx || missing+=(nginx)
    install_packages "${missing[@]}"
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
    start_static_upstream "$dir"
    UPSTREAM=http://127.0.0.1:$UPSTREAM_PORT/simple/
    log "upstream: $UPSTREAM ($FILENAME, $FILE_BYTES bytes, sha256 ${FILE_SHA256:0:16}…)"
}

start_pmcache() {
    start_pmcache_with \
        PMCACHE_PYPI_UPSTREAM="$UPSTREAM" \
        PMCACHE_PYPI_METADATA_TTL=1h \
        PMCACHE_NPM_ENABLED=false \
        PMCACHE_RUBYGEMS_ENABLED=false \
        PMCACHE_PACKAGIST_ENABLED=false
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
    local www=$WORK/www
    mkdir -p "$www$FILE_PATH" "$www$PAGE_PATH"
    rmdir "$www$FILE_PATH"
    cp "$WORK/bodies/file" "$www$FILE_PATH"
    cp "$WORK/bodies/page" "$www${PAGE_PATH}index.html"
    start_nginx_static application/octet-stream "" "" "$FILE_PATH"
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
    echo
    echo "warm small answers: $REQUESTS GETs per run, each timed, kept-alive HTTP/1.1, loopback"
    echo "  file: $FILENAME, $(stat -c %s "$WORK/bodies/file") bytes; page: PEP 691 JSON," \
        "$(stat -c %s "$WORK/bodies/page") bytes"
    echo "  machine: $(machine_line)"
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
    finish_report 11 $'case\tserver\tconnections\trequests\terrors\tmean_ms\tp50_ms\tp90_ms\tp99_ms\tmax_ms\tbusy_before_pct'
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
