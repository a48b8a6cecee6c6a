#!/usr/bin/env bash
# pmcache side by side with nginx, devpi, proxpi and Verdaccio: one command, one sitting.
#
# Usage: bench/run.sh [-h|--help] [SCENARIO…]      (default: all)
#
# Scenarios (docs/performance.md says what each measures):
#   small-file      warm 1.5 KB wheel                  pmcache nginx devpi proxpi
#   wheel-2mb       warm 2 MB wheel                    pmcache nginx devpi proxpi
#   pypi-json       warm project page, PEP 691 JSON, gzip accepted   pmcache nginx devpi proxpi
#   pypi-html       warm project page, HTML, gzip accepted           pmcache nginx devpi proxpi
#   tarball-1mb     warm 1 MB npm tarball              pmcache nginx verdaccio
#   packument-10mb  warm ~10 MB full packument, identity             pmcache nginx verdaccio
#   packument-gzip  the same packument, gzip accepted                pmcache nginx verdaccio
#   cold-packument  first GET of the packument through a cold pmcache vs the plain fetch of it
#   downloads-200   200 concurrent downloads of a cached 20 MB file: peak RSS (pmcache, nginx)
#   misses-200      200 concurrent misses of one 20 MB file: peak RSS, upstream requests
#   startup         exec to the first 200 from /healthz, explicit and `auto` upstreams
#   warm            the seven warm rows;  all   every scenario
#
# The warm rows run wrk -t2 -c32 against every system in turn, ROUNDS times, interleaved (round
# 1 of every row and system, then round 2, …), each run after the machine is idle (bench/lib/
# harness.sh wait_idle). nginx serves pmcache's own answers (same bytes, checked); devpi,
# proxpi and Verdaccio proxy the same loopback upstream (bench/lib/upstream.py serving what
# bench/gen_upstream.py and bench/gen_packument.py wrote). Everything listens on 127.0.0.1 only
# and every process started here is stopped on exit, error or Ctrl-C.
#
# Installs what it compares against when missing: nginx, wrk and curl from Debian (apt-get);
# devpi-server, devpi-client, proxpi and gunicorn (pinned) into a venv with the local pip and
# its configured index; Verdaccio (pinned) with the local npm and its configured registry; both
# under BENCH_TOOLS_DIR.
#
# Environment (all optional):
#   PMCACHE_BIN            pmcache binary; default `cargo build --release --locked`. Either is
#                          copied into the temp dir first (a build cannot swap it mid-run).
#   BENCH_SYSTEMS          systems of the warm rows   (default "pmcache nginx devpi proxpi verdaccio")
#   BENCH_ROUNDS           rounds of the warm rows, of cold-packument and of misses-200 (default 3)
#   WRK_THREADS            wrk -t                     (default 2)
#   WRK_CONNECTIONS        wrk -c                     (default 32)
#   WRK_DURATION           wrk -d                     (default 10s)
#   WRK_TIMEOUT            wrk --timeout              (default 30s)
#   BENCH_CONCURRENCY      clients of downloads-200 and misses-200   (default 200)
#   BENCH_STARTUP_RUNS     runs per start-up configuration           (default 7)
#   BENCH_PACKUMENT_BYTES  size of the generated packument           (default 10000000)
#   BENCH_PAGE_FILES       files listed on the project page          (default 1200)
#   BENCH_IDLE_PERCENT     busy% under which the machine counts as idle (default 20)
#   BENCH_IDLE_TIMEOUT     seconds to wait for idle before each run  (default 60)
#   BENCH_TOOLS_DIR        where the venv and Verdaccio go  (default <repo>/target/bench-tools)
#   BENCH_STARTUP_TIMEOUT  seconds to wait for each server to listen (default 120)
#   BENCH_RESULTS          also write every measurement as TSV to this file
#   BENCH_MARKDOWN=1       print the summary as Markdown tables
#   BENCH_KEEP_TMP=1       keep the temp dir (logs, bodies, configs) for inspection
#   BENCH_NO_INSTALL=1     never install anything; fail if something is missing

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib/harness.sh
. "$HERE/lib/harness.sh"

WARM_ROWS="small-file wheel-2mb pypi-json pypi-html tarball-1mb packument-10mb packument-gzip"
OTHER_SCENARIOS="cold-packument downloads-200 misses-200 startup"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
    exit 0
fi
SCENARIOS=()
for arg in "${@:-all}"; do
    case " $WARM_ROWS $OTHER_SCENARIOS " in
    *" $arg "*) SCENARIOS+=("$arg") ;;
    *)
        case $arg in
        all) read -ra more <<<"$WARM_ROWS $OTHER_SCENARIOS" && SCENARIOS+=("${more[@]}") ;;
        warm) read -ra more <<<"$WARM_ROWS" && SCENARIOS+=("${more[@]}") ;;
        *) die "unknown scenario '$arg' (see $0 --help)" ;;
        esac
        ;;
    esac
done
wants() { [[ " ${SCENARIOS[*]} " == *" $1 "* ]]; }
wants_any() {
    local s
    for s in "$@"; do wants "$s" && return 0; done
    return 1
}

SYSTEMS=${BENCH_SYSTEMS:-pmcache nginx devpi proxpi verdaccio}
ROUNDS=${BENCH_ROUNDS:-3}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_TIMEOUT=${WRK_TIMEOUT:-30s}
CONCURRENCY=${BENCH_CONCURRENCY:-200}
STARTUP_RUNS=${BENCH_STARTUP_RUNS:-7}
PACKUMENT_BYTES=${BENCH_PACKUMENT_BYTES:-10000000}
PAGE_FILES=${BENCH_PAGE_FILES:-1200}
TOOLS_DIR=${BENCH_TOOLS_DIR:-$ROOT/target/bench-tools}
STARTUP_TIMEOUT=${BENCH_STARTUP_TIMEOUT:-120}

for system in $SYSTEMS; do
    case $system in pmcache | nginx | devpi | proxpi | verdaccio) ;; *) die "unknown system '$system'" ;; esac
done
[[ " $SYSTEMS " == *" pmcache "* && " $SYSTEMS " == *" nginx "* ]] ||
    die "BENCH_SYSTEMS must hold pmcache and nginx (the rows are ratios to nginx)"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 && $ROUNDS -le 20 ]] || die "BENCH_ROUNDS must be 1..20"
[[ $CONCURRENCY =~ ^[0-9]+$ && $CONCURRENCY -ge 2 && $CONCURRENCY -le 250 ]] ||
    die "BENCH_CONCURRENCY must be 2..250 (pmcache's default max_connections_per_client is 256)"
has_system() { [[ " $SYSTEMS " == *" $1 "* ]]; }

# Pinned versions of what pmcache is compared with.
PY_PINS="devpi-server==6.20.3 devpi-client==7.3.0 proxpi==1.3.1 gunicorn==27.0.1"
VERDACCIO_VERSION=6.8.0 # 6.9 and later refuse Node.js 20, Debian 12's and this machine's

PROJECT=benchpkg
NPM_SMALL=bench-tarball
NPM_BIG=bench-packument
# What pip sends for a project page, and for a file.
PIP_ACCEPT='application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01'
HTML_ACCEPT='text/html'

# Per row: the ecosystem, the Accept and Accept-Encoding headers.
declare -A ROW_ECO=([small-file]=pypi [wheel-2mb]=pypi [pypi-json]=pypi [pypi-html]=pypi
    [tarball-1mb]=npm [packument-10mb]=npm [packument-gzip]=npm)
declare -A ROW_ACCEPT=([small-file]='*/*' [wheel-2mb]='*/*' [pypi-json]=$PIP_ACCEPT
    [pypi-html]=$HTML_ACCEPT [tarball-1mb]='*/*' [packument-10mb]=application/json
    [packument-gzip]=application/json)
declare -A ROW_ENCODING=([small-file]=identity [wheel-2mb]=identity [pypi-json]=gzip
    [pypi-html]=gzip [tarball-1mb]=identity [packument-10mb]=identity [packument-gzip]=gzip)
# Per "row system": the URL wrk asks for, the body's sha256 and size, or why it cannot run.
declare -A URL=() SHA=() SIZE=() NA=() SERVER_PID=()

# --- tools ---------------------------------------------------------------------------------

install_tools() {
    local missing=()
    command -v python3 >/dev/null || die "python3 is required"
    command -v curl >/dev/null || missing+=(curl)
    command -v wrk >/dev/null || missing+=(wrk)
    have_nginx || missing+=(nginx)
    install_packages "${missing[@]}"
    command -v wrk >/dev/null || die "wrk not found after install"
    nginx -V 2>&1 | grep -q -- '--with-http_gzip_static_module' || die "this nginx lacks gzip_static"
    mkdir -p "$TOOLS_DIR"
    if has_system devpi || has_system proxpi; then
        if [[ $(cat "$TOOLS_DIR/venv/.bench-pins" 2>/dev/null) != "$PY_PINS" ]]; then
            [[ ${BENCH_NO_INSTALL:-0} != 1 ]] || die "missing: $PY_PINS (BENCH_NO_INSTALL=1)"
            log "installing $PY_PINS into $TOOLS_DIR/venv (pip, its configured index)"
            rm -rf "$TOOLS_DIR/venv"
            python3 -m venv "$TOOLS_DIR/venv" || die "python3 -m venv failed"
            # shellcheck disable=SC2086 # the pins are separate words
            timeout 900 "$TOOLS_DIR/venv/bin/pip" install -q $PY_PINS >&2 || die "pip install failed"
            echo "$PY_PINS" >"$TOOLS_DIR/venv/.bench-pins"
        fi
    fi
    if has_system verdaccio; then
        if [[ $(cat "$TOOLS_DIR/verdaccio/.bench-pin" 2>/dev/null) != "$VERDACCIO_VERSION" ]]; then
            [[ ${BENCH_NO_INSTALL:-0} != 1 ]] || die "missing: verdaccio (BENCH_NO_INSTALL=1)"
            command -v npm >/dev/null || die "npm is required to install Verdaccio"
            log "installing verdaccio@$VERDACCIO_VERSION into $TOOLS_DIR/verdaccio (npm, its configured registry)"
            rm -rf "$TOOLS_DIR/verdaccio"
            mkdir -p "$TOOLS_DIR/verdaccio"
            timeout 900 npm install --prefix "$TOOLS_DIR/verdaccio" --no-audit --no-fund \
                "verdaccio@$VERDACCIO_VERSION" >&2 || die "npm install verdaccio failed"
            echo "$VERDACCIO_VERSION" >"$TOOLS_DIR/verdaccio/.bench-pin"
        fi
    fi
}

# --- upstream ------------------------------------------------------------------------------

start_upstream() {
    local dir=$WORK/upstream
    mkdir -p "$dir"
    start_static_upstream "$dir"
    UPSTREAM=http://127.0.0.1:$UPSTREAM_PORT/
    log "upstream: $UPSTREAM (bench/lib/upstream.py)"
    timeout 300 python3 "$HERE/gen_upstream.py" --out "$dir" --base "$UPSTREAM" --project "$PROJECT" \
        --package "$NPM_SMALL" --page-files "$PAGE_FILES" >"$WORK/upstream.json" 2>"$WORK/gen.log" ||
        die "gen_upstream.py failed: $(cat "$WORK/gen.log")"
    mkdir -p "$dir/registry/$NPM_BIG"
    timeout 300 python3 "$HERE/gen_packument.py" --name "$NPM_BIG" --tarball-base "${UPSTREAM}registry/" \
        --target-bytes "$PACKUMENT_BYTES" --out "$dir/registry/$NPM_BIG/index.json" 2>"$WORK/gen.log" ||
        die "gen_packument.py failed: $(cat "$WORK/gen.log")"
    GEN_SUMMARY=$(cat "$WORK/gen.log")
    log "generated: $GEN_SUMMARY"
    BIG_NAME=$(json_field "$WORK/upstream.json" pypi big name)
    BIG_SHA=$(json_field "$WORK/upstream.json" pypi big sha256)
    BIG_PATH=$(json_field "$WORK/upstream.json" pypi big path)
}

# json_field FILE KEY… -> the value at that path of a JSON file.
json_field() {
    python3 -c 'import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2:]:
    value = value[key]
print(value)' "$@"
}

# Requests the upstream has logged for PATH so far.
upstream_count() { grep -cF "\"GET $1 HTTP" "$WORK/upstream.log" || true; }

# --- fetching ------------------------------------------------------------------------------

# get URL ACCEPT ENCODING NAME -> status; body in $WORK/bodies/NAME, headers in NAME.h
get() {
    mkdir -p "$WORK/bodies"
    curl -sS --max-time 300 -H "Accept: $2" -H "Accept-Encoding: $3" \
        -o "$WORK/bodies/$4" -D "$WORK/bodies/$4.h" -w '%{http_code}' "$1" || echo 000
}

header_of() { # header_of NAME HEADER -> value in the last answer, or nothing
    tr -d '\r' <"$WORK/bodies/$1.h" | awk -v n="$(tr 'A-Z' 'a-z' <<<"$2")" '
        /^HTTP\// { v = "" }
        { split($0, kv, ":"); k = tolower(kv[1]) }
        k == n { sub(/^[^:]*:[ \t]*/, ""); v = $0 }
        END { print v }'
}

sha_of() { sha256sum <"$WORK/bodies/$1" | cut -d' ' -f1; }

# The absolute URLs of the files on a PEP 691 JSON page (body NAME, fetched from BASE_URL),
# one "filename<TAB>url" a line.
json_page_files() {
    python3 - "$WORK/bodies/$1" "$2" <<'EOF'
import json, sys, urllib.parse
page = json.load(open(sys.argv[1], "rb"))
for entry in page["files"]:
    print(entry["filename"], urllib.parse.urljoin(sys.argv[2], entry["url"]), sep="\t")
EOF
}

# The URL of `filename` on a page listed by json_page_files, or nothing.
file_url() { awk -F'\t' -v f="$2" '$1 == f { print $2 }' <<<"$1"; }

# Records row ROW of SYSTEM at URL after one GET with the row's headers: a 200 of the expected
# sha256 (when given) is the body wrk will fetch; anything else makes the row n/a.
# register ROW SYSTEM URL PID [SHA256]
register() {
    local row=$1 system=$2 url=$3 pid=$4 expected=${5:-} name=$1.$2 code
    code=$(get "$url" "${ROW_ACCEPT[$row]}" "${ROW_ENCODING[$row]}" "$name")
    if [[ $code != 200 ]]; then
        NA["$row $system"]="answered $code"
        log "warning: $system: $row answered $code; the row is n/a"
        return
    fi
    if [[ -n $expected && $(sha_of "$name") != "$expected" ]]; then
        NA["$row $system"]="wrong bytes"
        log "warning: $system: $row served other bytes than the upstream's; the row is n/a"
        return
    fi
    URL["$row $system"]=$url
    SHA["$row $system"]=$(sha_of "$name")
    SIZE["$row $system"]=$(stat -c %s "$WORK/bodies/$name")
    SERVER_PID["$row $system"]=$pid
}

# --- pmcache -------------------------------------------------------------------------------

pmcache_settings() { # the settings of every pmcache here (NAME=VALUE words)
    echo "PMCACHE_PYPI_UPSTREAM=${UPSTREAM}simple/ PMCACHE_NPM_UPSTREAM=${UPSTREAM}registry/" \
        "PMCACHE_PYPI_METADATA_TTL=1h PMCACHE_NPM_METADATA_TTL=1h" \
        "PMCACHE_RUBYGEMS_ENABLED=false PMCACHE_PACKAGIST_ENABLED=false"
}

start_pmcache() { # start_pmcache INSTANCE
    local settings
    read -ra settings <<<"$(pmcache_settings)"
    PMCACHE_INSTANCE=$1 start_pmcache_with "${settings[@]}"
}

# Warms the main pmcache on every selected row (and the 20 MB file for downloads-200): each
# answer fetched twice, the second must be a cache hit; registers its rows.
warm_pmcache() {
    local code files row url
    code=$(get "$PMCACHE_BASE/pypi/simple/$PROJECT/" "$PIP_ACCEPT" identity page.fill)
    [[ $code == 200 ]] || die "pmcache: the project page answered $code"
    files=$(json_page_files page.fill "$PMCACHE_BASE/pypi/simple/$PROJECT/")
    declare -gA PMCACHE_URL=(
        [small-file]=$(file_url "$files" "$(json_field "$WORK/upstream.json" pypi small name)")
        [wheel-2mb]=$(file_url "$files" "$(json_field "$WORK/upstream.json" pypi wheel name)")
        [big]=$(file_url "$files" "$BIG_NAME")
        [pypi-json]=$PMCACHE_BASE/pypi/simple/$PROJECT/
        [pypi-html]=$PMCACHE_BASE/pypi/simple/$PROJECT/
        [tarball-1mb]=$PMCACHE_BASE/npm/$NPM_SMALL/-/$NPM_SMALL-1.0.0.tgz
        [packument-10mb]=$PMCACHE_BASE/npm/$NPM_BIG
        [packument-gzip]=$PMCACHE_BASE/npm/$NPM_BIG
    )
    for row in "${!PMCACHE_URL[@]}"; do
        [[ -n ${PMCACHE_URL[$row]} ]] || die "pmcache: no URL for $row on its page"
    done
    local rows=()
    for row in $WARM_ROWS; do wants "$row" && rows+=("$row"); done
    if wants downloads-200; then
        ROW_ACCEPT[big]='*/*'
        ROW_ENCODING[big]=identity
        rows+=(big)
    fi
    for row in "${rows[@]}"; do
        url=${PMCACHE_URL[$row]}
        code=$(get "$url" "${ROW_ACCEPT[$row]}" "${ROW_ENCODING[$row]}" "$row.fill")
        [[ $code == 200 ]] || die "pmcache: $row ($url) answered $code"
        register "$row" pmcache "$url" "$PMCACHE_PID" "$(expected_sha "$row")"
        [[ -z ${NA["$row pmcache"]:-} ]] || die "pmcache: $row: ${NA["$row pmcache"]}"
        [[ $(header_of "$row.pmcache" x-pmcache-cache) == hit ]] ||
            die "pmcache: the second GET of $row was not a cache hit"
    done
    log "pmcache warm: ${rows[*]}"
}

# The upstream's sha256 of the row's file, for the rows that are files.
expected_sha() {
    case $1 in
    small-file) json_field "$WORK/upstream.json" pypi small sha256 ;;
    wheel-2mb) json_field "$WORK/upstream.json" pypi wheel sha256 ;;
    big) echo "$BIG_SHA" ;;
    tarball-1mb) json_field "$WORK/upstream.json" npm tarball sha256 ;;
    esac
}

# --- nginx ---------------------------------------------------------------------------------

# nginx serves pmcache's very answers: www/<row> (identity) and www/<row>.gz (pmcache's gzip
# body, for the rows that accept gzip and that pmcache gzipped), with gzip_static.
start_nginx() {
    local row www=$WORK/www code probe=""
    mkdir -p "$www"
    for row in $WARM_ROWS big; do
        [[ -n ${URL["$row pmcache"]:-} ]] || continue
        probe=/$row
        if [[ ${ROW_ENCODING[$row]} == gzip ]]; then
            code=$(get "${URL["$row pmcache"]}" "${ROW_ACCEPT[$row]}" identity "$row.identity")
            [[ $code == 200 ]] || die "pmcache: identity GET of $row answered $code"
            cp "$WORK/bodies/$row.identity" "$www/$row"
            if [[ $(header_of "$row.pmcache" content-encoding) == gzip ]]; then
                cp "$WORK/bodies/$row.pmcache" "$www/$row.gz"
            fi
        else
            cp "$WORK/bodies/$row.pmcache" "$www/$row"
        fi
    done
    start_nginx_static application/octet-stream "tcp_nopush on;" "location / { gzip_static on; }" \
        "$probe" -H 'Accept-Encoding: identity'
    for row in $WARM_ROWS big; do
        [[ -n ${URL["$row pmcache"]:-} ]] || continue
        register "$row" nginx "$NGINX_BASE/$row" "$NGINX_PID"
        [[ ${SHA["$row nginx"]:-} == "${SHA["$row pmcache"]}" ]] ||
            die "nginx does not serve pmcache's bytes for $row"
    done
    log "nginx: $NGINX_BASE ($(nginx -v 2>&1 | sed 's/.*: //'), worker_processes auto), same bytes as pmcache"
}

# --- devpi ---------------------------------------------------------------------------------

start_devpi() {
    local dir=$WORK/devpi port files code row
    local bin=$TOOLS_DIR/venv/bin
    mkdir -p "$dir"
    timeout 120 "$bin/devpi-init" --serverdir "$dir/server" --no-root-pypi >"$dir/init.log" 2>&1 ||
        die "devpi-init failed: $(tail -n 5 "$dir/init.log")"
    port=$(free_port)
    "$bin/devpi-server" --serverdir "$dir/server" --host 127.0.0.1 --port "$port" \
        >"$dir/server.log" 2>&1 &
    DEVPI_PID=$!
    PIDS+=("$DEVPI_PID")
    PORTS+=("$port")
    DEVPI_BASE=http://127.0.0.1:$port
    WAIT_LOG=$dir/server.log wait_for devpi-server "$STARTUP_TIMEOUT" "$DEVPI_PID" \
        curl -sf --max-time 5 -o /dev/null "$DEVPI_BASE/+api"
    # A mirror index of the loopback upstream, made with devpi's own client.
    {
        DEVPI_CLIENTDIR=$dir/client timeout 60 "$bin/devpi" use "$DEVPI_BASE/" &&
            DEVPI_CLIENTDIR=$dir/client timeout 60 "$bin/devpi" login root --password '' &&
            DEVPI_CLIENTDIR=$dir/client timeout 60 "$bin/devpi" index -c root/up type=mirror \
                "mirror_url=${UPSTREAM}simple/" mirror_cache_expiry=3600
    } >"$dir/client.log" 2>&1 || die "devpi: creating the mirror index failed: $(tail -n 5 "$dir/client.log")"
    local page=$DEVPI_BASE/root/up/+simple/$PROJECT/
    code=$(get "$page" "$PIP_ACCEPT" identity page.devpi)
    [[ $code == 200 ]] || die "devpi: the project page answered $code"
    if [[ $(header_of page.devpi content-type) != application/vnd.pypi.simple.v1+json* ]]; then
        die "devpi answered pip's Accept with $(header_of page.devpi content-type), not PEP 691 JSON"
    fi
    files=$(json_page_files page.devpi "$page")
    for row in small-file wheel-2mb pypi-json pypi-html; do
        wants "$row" || continue
        case $row in
        small-file) register "$row" devpi "$(file_url "$files" "$(json_field "$WORK/upstream.json" pypi small name)")" "$DEVPI_PID" "$(expected_sha "$row")" ;;
        wheel-2mb) register "$row" devpi "$(file_url "$files" "$(json_field "$WORK/upstream.json" pypi wheel name)")" "$DEVPI_PID" "$(expected_sha "$row")" ;;
        *) register "$row" devpi "$page" "$DEVPI_PID" ;;
        esac
    done
    log "devpi: $DEVPI_BASE (devpi-server $("$bin/devpi-server" --version 2>/dev/null), waitress)"
}

# --- proxpi --------------------------------------------------------------------------------

# proxpi (Flask) under gunicorn, 2 workers (one per core) of 4 threads each. A worker that has
# not downloaded a file itself redirects to the upstream until it has, and each worker reads the
# cache dir only when it starts: so it is warmed with one worker, then restarted with two.
start_proxpi() {
    local dir=$WORK/proxpi port page row name code i
    mkdir -p "$dir/cache"
    port=$(free_port)
    PROXPI_BASE=http://127.0.0.1:$port
    page=$PROXPI_BASE/index/$PROJECT/
    run_proxpi() {
        PROXPI_INDEX_URL=${UPSTREAM}simple/ PROXPI_CACHE_DIR=$dir/cache PROXPI_INDEX_TTL=3600 \
            PROXPI_LOGGING_LEVEL=WARNING \
            "$TOOLS_DIR/venv/bin/gunicorn" --bind "127.0.0.1:$port" --workers "$1" --threads 4 \
            --worker-class gthread --log-level warning proxpi.server:app >>"$dir/server.log" 2>&1 &
        PROXPI_PID=$!
        PIDS+=("$PROXPI_PID")
        WAIT_LOG=$dir/server.log wait_for proxpi "$STARTUP_TIMEOUT" "$PROXPI_PID" \
            curl -sf --max-time 5 -o /dev/null "$PROXPI_BASE/"
    }
    run_proxpi 1
    PORTS+=("$port")
    code=$(get "$page" "$PIP_ACCEPT" identity page.proxpi)
    [[ $code == 200 ]] || die "proxpi: the project page answered $code"
    for name in small wheel; do
        name=$(json_field "$WORK/upstream.json" pypi "$name" name)
        # Redirects to the upstream while it downloads; a 200 once the file is in its cache.
        wait_for "proxpi's download of $name" 120 "$PROXPI_PID" \
            test "$(curl -s --max-time 60 -o /dev/null -w '%{http_code}' "$page$name")" = 200
    done
    stop_pid "$PROXPI_PID"
    run_proxpi 2
    for row in small-file wheel-2mb pypi-json pypi-html; do
        wants "$row" || continue
        case $row in
        small-file) name=$(json_field "$WORK/upstream.json" pypi small name) ;;
        wheel-2mb) name=$(json_field "$WORK/upstream.json" pypi wheel name) ;;
        *) name="" ;;
        esac
        # Each worker learns the page on its own: a few GETs reach both.
        for ((i = 0; i < 8; i++)); do get "$page$name" "${ROW_ACCEPT[$row]}" "${ROW_ENCODING[$row]}" "$row.proxpi.$i" >/dev/null; done
        register "$row" proxpi "$page$name" "$PROXPI_PID" "$(expected_sha "$row")"
    done
    log "proxpi: $PROXPI_BASE (proxpi $("$TOOLS_DIR/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("proxpi"))'), gunicorn 2x4 gthread)"
}

# --- Verdaccio -----------------------------------------------------------------------------

start_verdaccio() {
    local dir=$WORK/verdaccio port code row url
    mkdir -p "$dir/storage"
    port=$(free_port)
    VERDACCIO_BASE=http://127.0.0.1:$port
    cat >"$dir/config.yaml" <<EOF
# Generated by bench/run.sh: a Verdaccio proxying the benchmark's loopback registry.
storage: $dir/storage
auth:
  htpasswd:
    file: $dir/htpasswd
    max_users: -1
uplinks:
  bench:
    url: ${UPSTREAM}registry/
    maxage: 60m
    cache: true
packages:
  '**':
    access: \$all
    proxy: bench
server:
  keepAliveTimeout: 60
listen: 127.0.0.1:$port
log: { type: stdout, format: pretty, level: error }
web:
  enable: false
EOF
    "$TOOLS_DIR/verdaccio/node_modules/.bin/verdaccio" --config "$dir/config.yaml" >"$dir/server.log" 2>&1 &
    VERDACCIO_PID=$!
    PIDS+=("$VERDACCIO_PID")
    PORTS+=("$port")
    WAIT_LOG=$dir/server.log wait_for verdaccio "$STARTUP_TIMEOUT" "$VERDACCIO_PID" \
        curl -sf --max-time 5 -o /dev/null "$VERDACCIO_BASE/-/ping"
    for row in tarball-1mb packument-10mb packument-gzip; do
        wants "$row" || continue
        case $row in
        tarball-1mb) url=$VERDACCIO_BASE/$NPM_SMALL/-/$NPM_SMALL-1.0.0.tgz
            code=$(get "$VERDACCIO_BASE/$NPM_SMALL" application/json identity tarball.packument.verdaccio)
            [[ $code == 200 ]] || die "verdaccio: the packument of $NPM_SMALL answered $code" ;;
        *) url=$VERDACCIO_BASE/$NPM_BIG ;;
        esac
        get "$url" "${ROW_ACCEPT[$row]}" "${ROW_ENCODING[$row]}" "$row.verdaccio.fill" >/dev/null
        register "$row" verdaccio "$url" "$VERDACCIO_PID" "$(expected_sha "$row")"
    done
    log "verdaccio: $VERDACCIO_BASE (verdaccio $VERDACCIO_VERSION, node $(node --version))"
}

# --- measuring -----------------------------------------------------------------------------

RAW_HEADER=$'scenario\tsystem\tround\treq_per_s\tp50_ms\tp99_ms\tcpu_ms_per_req\terrors\tbody_bytes\tbusy_pct\tseconds\tpeak_rss_mib\tupstream_requests'
# raw SCENARIO SYSTEM ROUND REQ_PER_S P50 P99 CPU ERRORS BYTES BUSY SECONDS RSS UPSTREAM
raw() { (IFS=$'\t' && echo "$*") >>"$WORK/raw.tsv"; }

warm_round() {
    local round=$1 row system key fields
    for row in $WARM_ROWS; do
        wants "$row" || continue
        for system in $SYSTEMS; do
            key="$row $system"
            [[ -n ${URL[$key]:-} ]] || continue
            wait_idle
            log "round $round: $row from $system (busy before: ${IDLE_BUSY}%)"
            fields=$(measure_wrk "$WORK/wrk.$row.$system.$round.txt" "${SERVER_PID[$key]}" \
                "${URL[$key]}" "Accept: ${ROW_ACCEPT[$row]}" "Accept-Encoding: ${ROW_ENCODING[$row]}")
            # req/s MB/s avg p50 p90 p99 max requests errors cpu
            read -r rps _ _ p50 _ p99 _ _ errors cpu <<<"$fields"
            raw "$row" "$system" "$round" "$rps" "$p50" "$p99" "$cpu" "$errors" "${SIZE[$key]}" \
                "$IDLE_BUSY" "" "" ""
        done
    done
}

# First GET of the packument through a cold pmcache (fresh data dir, fresh process) and the
# plain GET of it from the upstream, same headers (npm's: JSON, gzip accepted).
cold_round() {
    local round=$1 direct through
    wait_idle
    direct=$(curl -sS --max-time 300 -o /dev/null -w '%{time_total}' -H 'Accept: application/json' \
        -H 'Accept-Encoding: gzip' "${UPSTREAM}registry/$NPM_BIG") || die "upstream GET failed"
    raw cold-packument upstream "$round" "" "" "" "" 0 "" "$IDLE_BUSY" "$direct" "" ""
    start_pmcache "cold$round"
    wait_idle
    through=$(curl -sS --max-time 300 -o /dev/null -w '%{time_total}' -H 'Accept: application/json' \
        -H 'Accept-Encoding: gzip' "$PMCACHE_BASE/npm/$NPM_BIG") || die "cold GET through pmcache failed"
    raw cold-packument pmcache "$round" "" "" "" "" 0 "" "$IDLE_BUSY" "$through" \
        "$(($(peak_rss_kib "$PMCACHE_PID") / 1024))" ""
    log "cold packument, round $round: upstream ${direct}s, through a cold pmcache ${through}s"
    stop_pid "$PMCACHE_PID"
    rm -rf "$WORK/cold$round-data"
}

# CONCURRENCY clients at once, one GET each of URL; peak RSS of PID (and its children) from a
# reset VmHWM. concurrent SCENARIO SYSTEM ROUND URL PID
concurrent() {
    local out rss requests errors p50 p99 wall up_before up_after
    wait_idle
    up_before=$(upstream_count "$BIG_PATH")
    reset_peak_rss "$5"
    out=$(timeout 600 python3 "$HERE/http_latency.py" "$4" --requests "$CONCURRENCY" \
        --connections "$CONCURRENCY" --warmup 0 --timeout 120 --sha256 "$BIG_SHA" --wall) ||
        log "warning: $2: some of the $CONCURRENCY downloads failed"
    rss=$(($(peak_rss_kib "$5") / 1024))
    up_after=$(upstream_count "$BIG_PATH")
    read -r requests errors _ p50 _ p99 _ wall <<<"$out"
    raw "$1" "$2" "$3" "" "$p50" "$p99" "" "$errors" "$(stat -c %s "$WORK/upstream$BIG_PATH")" \
        "$IDLE_BUSY" "$wall" "$rss" "$((up_after - up_before))"
    log "$1 from $2, round $3: $requests downloads, $errors errors, ${wall}s, peak RSS ${rss} MiB," \
        "$((up_after - up_before)) upstream GETs"
}

misses_round() {
    local round=$1 code files
    start_pmcache "misses$round"
    code=$(get "$PMCACHE_BASE/pypi/simple/$PROJECT/" "$PIP_ACCEPT" identity "misses.page")
    [[ $code == 200 ]] || die "pmcache: the project page answered $code"
    files=$(json_page_files misses.page "$PMCACHE_BASE/pypi/simple/$PROJECT/")
    concurrent misses-200 pmcache "$round" "$(file_url "$files" "$BIG_NAME")" "$PMCACHE_PID"
    stop_pid "$PMCACHE_PID"
    rm -rf "$WORK/misses$round-data"
}

startup_runs() {
    local config settings out
    for config in explicit auto; do
        settings=(PMCACHE_LOG_FILTER=warn PMCACHE_RUBYGEMS_ENABLED=false PMCACHE_PACKAGIST_ENABLED=false)
        if [[ $config == explicit ]]; then
            settings+=("PMCACHE_PYPI_UPSTREAM=${UPSTREAM}simple/" "PMCACHE_NPM_UPSTREAM=${UPSTREAM}registry/")
        else
            # `auto` asks the local pip and npm; their settings name the loopback upstream, so
            # nothing leaves the machine (and discovery still runs them).
            settings+=(PMCACHE_PYPI_UPSTREAM=auto PMCACHE_NPM_UPSTREAM=auto
                "PIP_INDEX_URL=${UPSTREAM}simple/" "npm_config_registry=${UPSTREAM}registry/")
        fi
        mkdir -p "$WORK/startup-$config"
        wait_idle
        out=$(env -u PMCACHE_BIN -u PMCACHE_INSTANCE "${settings[@]}" timeout 600 \
            python3 "$HERE/lib/startup.py" --runs "$STARTUP_RUNS" --workdir "$WORK/startup-$config" \
            -- "$PMCACHE_BIN" serve --listen '127.0.0.1:{port}' --data-dir '{data}') ||
            die "start-up runs ($config) failed: $out"
        # runs median min max all
        read -r _ median _ _ all <<<"$out"
        raw startup "pmcache-$config" all "" "$median" "" "" 0 "" "$IDLE_BUSY" "" "" ""
        log "start-up, $config upstreams: median ${median} ms (runs: $all)"
    done
}

# --- report --------------------------------------------------------------------------------

report() {
    echo
    echo "bench/run.sh: ${SCENARIOS[*]}"
    echo "  machine: $(machine_line); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "  pmcache: $PMCACHE_SOURCE; wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION," \
        "$ROUNDS round(s), medians shown"
    echo "  packument: $GEN_SUMMARY"
    local na="" key
    for key in "${!NA[@]}"; do na+="$key=${NA[$key]};"; done
    BENCH_NA=$na python3 "$HERE/lib/summary.py" "$WORK/raw.tsv" ${BENCH_MARKDOWN:+--markdown}
    if [[ -n ${BENCH_RESULTS:-} ]]; then
        {
            printf '%s\n' "$RAW_HEADER"
            cat "$WORK/raw.tsv"
        } >"$BENCH_RESULTS"
    fi
}

main() {
    LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    install_tools
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/pmcache-bench.XXXXXX")
    PMCACHE_SOURCE=${PMCACHE_BIN:-"cargo build --release --locked"}
    build_pmcache
    if [[ $PMCACHE_BIN != "$WORK/pmcache" ]]; then
        cp "$PMCACHE_BIN" "$WORK/pmcache"
        PMCACHE_BIN=$WORK/pmcache
    fi
    PMCACHE_SOURCE+=" ($("$PMCACHE_BIN" --version 2>/dev/null || echo "version unknown"))"
    : >"$WORK/raw.tsv"
    start_upstream
    local warm_selected=0 round row
    for row in $WARM_ROWS; do wants "$row" && warm_selected=1; done
    if ((warm_selected)) || wants downloads-200; then
        start_pmcache pmcache
        MAIN_PMCACHE_PID=$PMCACHE_PID
        warm_pmcache
        start_nginx
        local need_pypi=0 need_npm=0
        for row in $WARM_ROWS; do
            wants "$row" || continue
            [[ ${ROW_ECO[$row]} == pypi ]] && need_pypi=1
            [[ ${ROW_ECO[$row]} == npm ]] && need_npm=1
        done
        if ((need_pypi)) && has_system devpi; then start_devpi; fi
        if ((need_pypi)) && has_system proxpi; then start_proxpi; fi
        if ((need_npm)) && has_system verdaccio; then start_verdaccio; fi
    fi
    for ((round = 1; round <= ROUNDS; round++)); do
        ((warm_selected)) && warm_round "$round"
        if wants downloads-200; then
            concurrent downloads-200 pmcache "$round" "${URL[big pmcache]}" "$MAIN_PMCACHE_PID"
            concurrent downloads-200 nginx "$round" "${URL[big nginx]}" "$NGINX_PID"
        fi
        if wants misses-200; then misses_round "$round"; fi
        if wants cold-packument; then cold_round "$round"; fi
    done
    if wants startup; then startup_runs; fi
    if [[ -n ${MAIN_PMCACHE_PID:-} ]] && ! kill -0 "$MAIN_PMCACHE_PID" 2>/dev/null; then
        die "pmcache died during the run"
    fi
    report
}

main
