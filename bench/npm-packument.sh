#!/usr/bin/env bash
# Warm npm packument throughput: pmcache vs nginx serving the same bytes as a static file.
#
# Usage: bench/npm-packument.sh [-h|--help]
#
# Generates a deterministic ~30 MB packument, serves it as pmcache's npm upstream from a tiny
# static server, warms pmcache, copies pmcache's exact response bodies (identity and gzip) into
# an nginx document root (gzip_static), checks both servers return identical bytes, then runs
# wrk against each for `Accept-Encoding: identity` and `Accept-Encoding: gzip` and prints
# requests/s, latency and the pmcache/nginx ratios. Everything listens on 127.0.0.1 only and
# every process started here is stopped on exit. See bench/README.md.
#
# Environment (all optional):
#   PMCACHE_BIN            pmcache binary to use; default: `cargo build --release --locked`
#   BENCH_PACKAGE          package name                          (default pmcache-bench-big)
#   BENCH_PACKUMENT_BYTES  size of the generated packument       (default 30000000)
#   WRK_THREADS            wrk -t                                (default 2)
#   WRK_CONNECTIONS        wrk -c                                (default 16)
#   WRK_DURATION           wrk -d                                (default 10s)
#   WRK_TIMEOUT            wrk --timeout, per request            (default 30s)
#   BENCH_CASES            encodings to run                      (default "identity gzip")
#   BENCH_GZIP_SOURCE      what nginx serves as the .gz: `pmcache` = pmcache's own gzip
#                          body, byte-identical (default); `gzip9` = `gzip -k -9` of the
#                          identity body (then only the decompressed bytes are compared)
#   BENCH_STARTUP_TIMEOUT  seconds to wait for each server to listen   (default 60)
#   BENCH_WARM_TIMEOUT     seconds allowed for the first (filling) GET (default 300)
#   BENCH_RESULTS          also write the results as TSV to this file
#   BENCH_KEEP_TMP=1       keep the temp dir (logs, bodies, nginx.conf) for inspection
#   BENCH_NO_INSTALL=1     never run apt-get; fail if nginx or wrk is missing

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib/harness.sh
. "$HERE/lib/harness.sh"
handle_arguments "$@"

PACKAGE=${BENCH_PACKAGE:-pmcache-bench-big}
PACKUMENT_BYTES=${BENCH_PACKUMENT_BYTES:-30000000}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_TIMEOUT=${WRK_TIMEOUT:-30s}
CASES=${BENCH_CASES:-identity gzip}
GZIP_SOURCE=${BENCH_GZIP_SOURCE:-pmcache}
STARTUP_TIMEOUT=${BENCH_STARTUP_TIMEOUT:-60}
WARM_TIMEOUT=${BENCH_WARM_TIMEOUT:-300}

case $GZIP_SOURCE in pmcache | gzip9) ;; *) die "BENCH_GZIP_SOURCE must be pmcache or gzip9" ;; esac
for c in $CASES; do
    case $c in identity | gzip) ;; *) die "BENCH_CASES may hold only identity and gzip" ;; esac
done

# --- 1. tools ------------------------------------------------------------------------------

have_gzip_static() { nginx -V 2>&1 | grep -q -- '--with-http_gzip_static_module'; }

install_tools() {
    local missing=()
    command -v python3 >/dev/null || die "python3 is required"
    command -v curl >/dev/null || missing+=(curl)
    command -v gzip >/dev/null || missing+=(gzip)
    command -v wrk >/dev/null || missing+=(wrk)
    have_nginx || missing+=(nginx-light)
    install_packages "${missing[@]}"
    command -v wrk >/dev/null || die "wrk not found after install"
    have_gzip_static || die "this nginx lacks gzip_static (try: apt-get install nginx)"
}

# --- 3. upstream ---------------------------------------------------------------------------

start_upstream() {
    mkdir -p "$WORK/upstream/registry"
    start_static_upstream "$WORK/upstream"
    UPSTREAM=http://127.0.0.1:$UPSTREAM_PORT/registry/
    log "upstream: $UPSTREAM (python3 -m http.server)"
}

generate_packument() {
    local file=$WORK/upstream/registry/$PACKAGE
    mkdir -p "$(dirname "$file")"
    log "generating the packument of $PACKAGE (~$PACKUMENT_BYTES bytes)"
    timeout 300 python3 "$HERE/gen_packument.py" --name "$PACKAGE" --tarball-base "$UPSTREAM" \
        --target-bytes "$PACKUMENT_BYTES" --out "$file" 2>"$WORK/gen.log" ||
        die "gen_packument.py failed: $(cat "$WORK/gen.log")"
    GEN_SUMMARY=$(cat "$WORK/gen.log")
    log "$GEN_SUMMARY"
    curl -sf --max-time 30 -o /dev/null "${UPSTREAM}${PACKAGE}" || die "upstream does not serve it"
}

# --- 3b. pmcache ---------------------------------------------------------------------------

start_pmcache() {
    start_pmcache_with \
        PMCACHE_NPM_UPSTREAM="$UPSTREAM" \
        PMCACHE_NPM_METADATA_TTL=1h \
        PMCACHE_PYPI_ENABLED=false
    PMCACHE_URL=$PMCACHE_BASE/npm/$PACKAGE
    log "pmcache: $PMCACHE_URL ($PMCACHE_BIN)"
}

# GET with the benchmark's headers. fetch URL ENCODING BODY_FILE HEADER_FILE [MAX_TIME]
fetch() {
    curl -sS --max-time "${5:-60}" -H 'Accept: application/json' -H "Accept-Encoding: $2" \
        -o "$3" -D "$4" -w '%{http_code}' "$1"
}

header_of() { # header_of FILE NAME -> value of the last response's header, lowercased name
    tr -d '\r' <"$1" | awk -v n="$(tr 'A-Z' 'a-z' <<<"$2")" '
        /^HTTP\// { v = "" }
        { split($0, kv, ":"); k = tolower(kv[1]) }
        k == n { sub(/^[^:]*:[ \t]*/, ""); v = $0 }
        END { print v }'
}

warm_pmcache() {
    local code started=$SECONDS
    mkdir -p "$WORK/bodies"
    log "warming pmcache (first GET fills from the upstream)"
    code=$(fetch "$PMCACHE_URL" identity "$WORK/bodies/fill" "$WORK/bodies/fill.h" "$WARM_TIMEOUT") ||
        die "first GET failed "
    [[ $code == 200 ]] || die "first GET answered $code: $(head -c 300 "$WORK/bodies/fill")"
    FILL_SECONDS=$((SECONDS - started))
    code=$(fetch "$PMCACHE_URL" gzip "$WORK/bodies/fill.gz" "$WORK/bodies/fill.gz.h") ||
        die "first gzip GET failed"
    [[ $code == 200 ]] || die "first gzip GET answered $code"
    # The bodies nginx will serve: pmcache's own warm answers.
    code=$(fetch "$PMCACHE_URL" identity "$WORK/bodies/pmcache.identity" "$WORK/bodies/pmcache.identity.h") ||
        die "warm GET failed "
    [[ $code == 200 ]] || die "warm GET answered $code"
    [[ -z $(header_of "$WORK/bodies/pmcache.identity.h" content-encoding) ]] ||
        die "pmcache answered Accept-Encoding: identity with a Content-Encoding"
    code=$(fetch "$PMCACHE_URL" gzip "$WORK/bodies/pmcache.gzip" "$WORK/bodies/pmcache.gzip.h") ||
        die "warm GET failed "
    [[ $code == 200 ]] || die "warm gzip GET answered $code"
    PMCACHE_GZIPS=0
    if [[ $(header_of "$WORK/bodies/pmcache.gzip.h" content-encoding) == gzip ]]; then
        PMCACHE_GZIPS=1
        gzip -dc "$WORK/bodies/pmcache.gzip" | cmp -s - "$WORK/bodies/pmcache.identity" ||
            die "pmcache's gzip body does not decompress to its identity body"
    else
        log "warning: pmcache did not gzip its answer to Accept-Encoding: gzip"
    fi
    python3 -c 'import json, sys; json.load(open(sys.argv[1], "rb"))' \
        "$WORK/bodies/pmcache.identity" || die "pmcache's body is not JSON"
    log "filled in ${FILL_SECONDS}s; identity $(stat -c %s "$WORK/bodies/pmcache.identity") bytes," \
        "gzip $(stat -c %s "$WORK/bodies/pmcache.gzip") bytes," \
        "cache header: $(header_of "$WORK/bodies/pmcache.identity.h" x-pmcache-cache)"
}

# --- 4. nginx ------------------------------------------------------------------------------

start_nginx() {
    local file=$WORK/www/npm/$PACKAGE
    mkdir -p "$(dirname "$file")"
    cp "$WORK/bodies/pmcache.identity" "$file"
    if [[ $GZIP_SOURCE == pmcache && $PMCACHE_GZIPS == 1 ]]; then
        cp "$WORK/bodies/pmcache.gzip" "$file.gz"
    else
        gzip -k -9 -f "$file"
    fi
    start_nginx_static application/json "tcp_nopush on;" "location / { gzip_static on; }" \
        "/npm/$PACKAGE" -H 'Accept-Encoding: identity'
    NGINX_URL=$NGINX_BASE/npm/$PACKAGE
    log "nginx: $NGINX_URL ($(nginx -v 2>&1 | sed 's/.*: //'), worker_processes auto)"
}

# --- 5. verify and measure -----------------------------------------------------------------

verify_same_bytes() {
    local enc srv code sums=() ce
    for enc in $CASES; do
        sums=()
        for srv in pmcache nginx; do
            local url=$PMCACHE_URL
            [[ $srv == nginx ]] && url=$NGINX_URL
            code=$(fetch "$url" "$enc" "$WORK/bodies/check.$srv.$enc" "$WORK/bodies/check.$srv.$enc.h") ||
                die "GET $enc from $srv failed"
            [[ $code == 200 ]] || die "$srv answered $code for $enc"
            ce=$(header_of "$WORK/bodies/check.$srv.$enc.h" content-encoding)
            if [[ $enc == gzip && $ce != gzip && ($srv == nginx || $PMCACHE_GZIPS == 1) ]]; then
                die "$srv sent Content-Encoding '$ce' to Accept-Encoding: gzip"
            fi
            sums+=("$(sha256sum <"$WORK/bodies/check.$srv.$enc" | cut -d' ' -f1)")
        done
        if [[ ${sums[0]} == "${sums[1]}" ]]; then
            log "verified $enc: identical bodies, sha256 ${sums[0]:0:16}…," \
                "$(stat -c %s "$WORK/bodies/check.nginx.$enc") bytes"
        elif [[ $enc == gzip ]] &&
            cmp -s <(gzip -dc "$WORK/bodies/check.pmcache.$enc" 2>/dev/null ||
                cat "$WORK/bodies/check.pmcache.$enc") <(gzip -dc "$WORK/bodies/check.nginx.$enc"); then
            log "verified gzip: same content, different compressed bytes" \
                "(pmcache $(stat -c %s "$WORK/bodies/check.pmcache.$enc")," \
                "nginx $(stat -c %s "$WORK/bodies/check.nginx.$enc") bytes)"
        else
            die "pmcache and nginx differ for $enc (sha256 ${sums[0]} vs ${sums[1]})"
        fi
    done
}

run_wrk() { # run_wrk SERVER ENCODING URL PID
    local busy fields
    busy=$(busy_percent)
    log "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION: $1, Accept-Encoding: $2" \
        "(CPU busy before: ${busy}%)"
    # req/s, MB/s, avg, p50, p90, p99, max (ms), requests, errors, server CPU ms per request
    fields=$(measure_wrk "$WORK/wrk.$1.$2.txt" "$4" "$3" 'Accept: application/json' \
        "Accept-Encoding: $2")
    printf '%s\t%s\t%s\t%s\n' "$2" "$1" "$fields" "$busy" >>"$WORK/results.tsv"
}

report() {
    echo
    echo "npm packument benchmark: $PACKAGE, warm, wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION"
    echo "  upstream document: $GEN_SUMMARY"
    echo "  served: identity $(stat -c %s "$WORK/bodies/pmcache.identity") bytes," \
        "gzip $(stat -c %s "$WORK/www/npm/$PACKAGE.gz") bytes (nginx .gz: $GZIP_SOURCE)"
    echo "  machine: $(machine_line)"
    echo "  pmcache: $PMCACHE_BIN; nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), worker_processes auto"
    echo
    {
        printf 'encoding\tserver\treq/s\tMB/s\tavg ms\tp50 ms\tp90 ms\tp99 ms\tmax ms\trequests\terrors\tCPU ms/req\tbusy%%\n'
        cat "$WORK/results.tsv"
    } | column -t -s $'\t'
    echo
    awk -F'\t' '
        { rps[$1, $2] = $3; p50[$1, $2] = $6; p99[$1, $2] = $8; cpu[$1, $2] = $12; order[++k] = $1 }
        END {
            print "pmcache / nginx:"
            for (i = 1; i <= k; i++) {
                e = order[i]
                if (done[e]++ || rps[e, "nginx"] == 0 || p50[e, "nginx"] == 0) continue
                printf "  %-8s  req/s %.2fx   p50 latency %.2fx   p99 latency %.2fx", e,
                    rps[e, "pmcache"] / rps[e, "nginx"], p50[e, "pmcache"] / p50[e, "nginx"],
                    p99[e, "pmcache"] / p99[e, "nginx"]
                if (cpu[e, "nginx"] > 0) printf "   server CPU/req %.2fx", cpu[e, "pmcache"] / cpu[e, "nginx"]
                printf "\n"
            }
        }' "$WORK/results.tsv"
    if awk -F'\t' '$11 > 0 { bad = 1 } END { exit !bad }' "$WORK/results.tsv"; then
        echo "warning: some requests failed (errors column); see the wrk output with BENCH_KEEP_TMP=1"
    fi
    finish_report 13 $'encoding\tserver\treq_per_s\tmb_per_s\tavg_ms\tp50_ms\tp90_ms\tp99_ms\tmax_ms\trequests\terrors\tserver_cpu_ms_per_req\tbusy_before_pct'
}

main() {
    install_tools
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/pmcache-bench.XXXXXX")
    build_pmcache
    start_upstream
    generate_packument
    start_pmcache
    warm_pmcache
    start_nginx
    verify_same_bytes
    : >"$WORK/results.tsv"
    local enc
    for enc in $CASES; do
        run_wrk pmcache "$enc" "$PMCACHE_URL" "$PMCACHE_PID"
        run_wrk nginx "$enc" "$NGINX_URL" "$NGINX_PID"
    done
    if ! kill -0 "$PMCACHE_PID" 2>/dev/null; then die "pmcache died during the run"; fi
    report
}

main
