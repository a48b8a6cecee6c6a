# What the pmcache-vs-nginx benchmarks share: arguments, logging, the processes they start (all
# stopped on exit), Debian packages they install, pmcache's build and start, a static upstream
# and an nginx, all on 127.0.0.1. Sourced (not run) by the bench/*.sh scripts after they set
# HERE (the bench dir) and ROOT (the repository).
#
# The sourcing script sets STARTUP_TIMEOUT before it starts anything; the helpers here set
# WORK (by the script), PIDS, PORTS, PMCACHE_BIN/PID/PORT/BASE, UPSTREAM_PID/PORT,
# NGINX_PORT/PID/BASE and IDLE_BUSY. bench/run.sh, the one entry point over all systems and
# scenarios, is built on them too.

# -h/--help prints the script's header comment; any other argument is an error.
handle_arguments() {
    if [[ ${1:-} == -h || ${1:-} == --help ]]; then
        sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
        exit 0
    fi
    if [[ $# -gt 0 ]]; then
        echo "usage: $0 [-h|--help]  (configure with environment variables, see --help)" >&2
        exit 2
    fi
}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

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

# --- tools ---------------------------------------------------------------------------------

# Installs the Debian packages named in "$@", if any, unless BENCH_NO_INSTALL=1; then puts
# /usr/sbin (nginx) on PATH.
install_packages() {
    if (($# > 0)); then
        [[ ${BENCH_NO_INSTALL:-0} != 1 ]] || die "missing: $* (BENCH_NO_INSTALL=1)"
        if [[ $(id -u) != 0 ]]; then
            command -v sudo >/dev/null || die "missing $*: install them or run as root"
            SUDO=sudo
        fi
        log "installing $* from Debian"
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
            apt-get install -y -q --no-install-recommends "$@" >&2 ||
            die "apt-get install $* failed"
        if [[ -n $POLICY_RC_D ]]; then
            $SUDO rm -f "$POLICY_RC_D"
            POLICY_RC_D=""
        fi
    fi
    PATH=$PATH:/usr/sbin
    command -v nginx >/dev/null || die "nginx not found after install"
}

# True when nginx is on PATH or where Debian puts it (not on a non-root PATH).
have_nginx() { command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]]; }

# --- pmcache -------------------------------------------------------------------------------

# Sets PMCACHE_BIN: the given one, or a copy in $WORK of a fresh release build.
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

# Starts pmcache on a free 127.0.0.1 port with the settings (NAME=VALUE) in "$@"; sets
# PMCACHE_PID, PMCACHE_PORT and PMCACHE_BASE. Its data dir is $WORK/<instance>-data and its
# output $WORK/<instance>.out and .err, where the instance is $PMCACHE_INSTANCE (default
# `pmcache`): a script running several pmcaches names each.
start_pmcache_with() {
    local name=${PMCACHE_INSTANCE:-pmcache}
    mkdir -p "$WORK/$name-data"
    # PMCACHE_BIN is the script's, not a setting. Request logs are off on both sides (nginx:
    # access_log off; pmcache: warn level) unless PMCACHE_LOG_FILTER says otherwise.
    env -u PMCACHE_BIN -u PMCACHE_INSTANCE \
        PMCACHE_LOG_FILTER="${PMCACHE_LOG_FILTER:-warn}" \
        "$@" \
        "$PMCACHE_BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name-data" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PMCACHE_PID=$!
    PIDS+=("$PMCACHE_PID")
    WAIT_LOG=$WORK/$name.err wait_for "$name" "$STARTUP_TIMEOUT" "$PMCACHE_PID" \
        grep -qs '^pmcache listening on http://127\.0\.0\.1:[0-9]' "$WORK/$name.out"
    PMCACHE_PORT=$(sed -n 's|^pmcache listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' \
        "$WORK/$name.out" | head -n1)
    PORTS+=("$PMCACHE_PORT")
    PMCACHE_BASE=http://127.0.0.1:$PMCACHE_PORT
}

# --- upstream and nginx --------------------------------------------------------------------

# Serves directory $1 on a free 127.0.0.1 port with bench/lib/upstream.py (http.server, where a
# directory holding index.json is that document); sets UPSTREAM_PID and UPSTREAM_PORT. Each
# request is a line of $WORK/upstream.log.
start_static_upstream() {
    python3 -u "$HERE/lib/upstream.py" --directory "$1" >"$WORK/upstream.log" 2>&1 &
    UPSTREAM_PID=$!
    PIDS+=("$UPSTREAM_PID")
    WAIT_LOG=$WORK/upstream.log wait_for "upstream static server" "$STARTUP_TIMEOUT" "$UPSTREAM_PID" \
        grep -qs 'Serving HTTP on .* port [0-9]' "$WORK/upstream.log"
    UPSTREAM_PORT=$(sed -n 's/^Serving HTTP on .* port \([0-9]*\).*/\1/p' "$WORK/upstream.log" | head -n1)
    PORTS+=("$UPSTREAM_PORT")
}

# Starts nginx serving $WORK/www as static files on a free 127.0.0.1 port, with its config, pid,
# logs and temp paths in $WORK/nginx, and waits until `curl PROBE_CURL_ARGS… <base><PROBE_PATH>`
# succeeds; sets NGINX_PORT, NGINX_PID and NGINX_BASE.
# start_nginx_static DEFAULT_TYPE HTTP_EXTRA SERVER_EXTRA PROBE_PATH [PROBE_CURL_ARGS…]
start_nginx_static() {
    local default_type=$1 http_extra=$2 server_extra=$3 probe=$4
    shift 4
    local www=$WORK/www dir=$WORK/nginx user_line=""
    mkdir -p "$dir/tmp"
    NGINX_PORT=$(free_port)
    # Workers drop to an unprivileged user when the master is root; ours must read the temp dir.
    [[ $(id -u) != 0 ]] || user_line="user root;"
    cat >"$dir/nginx.conf" <<EOF
# Generated by bench/$(basename "$0"): a static copy of pmcache's warm answers.
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
    default_type $default_type;
    access_log off;
    sendfile on;
    $http_extra
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/client;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $www;
        $server_extra
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
        curl -sf --max-time 5 -o /dev/null "$@" "$NGINX_BASE$probe"
}

# --- measuring -----------------------------------------------------------------------------

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

# Waits until the machine is idle (busy under BENCH_IDLE_PERCENT, default 20) for one second,
# at most BENCH_IDLE_TIMEOUT seconds (default 60); sets IDLE_BUSY to the last busy percent seen.
# A machine that stays busy is not waited for forever: the run goes on and its busy% says so.
wait_idle() {
    local limit=${BENCH_IDLE_PERCENT:-20} deadline=$((SECONDS + ${BENCH_IDLE_TIMEOUT:-60}))
    IDLE_BUSY=$(busy_percent)
    while ((IDLE_BUSY > limit && SECONDS < deadline)); do
        IDLE_BUSY=$(busy_percent)
    done
    ((IDLE_BUSY <= limit)) || log "warning: still ${IDLE_BUSY}% busy after ${BENCH_IDLE_TIMEOUT:-60}s; measuring anyway"
}

# Seconds in a wrk duration such as 10s, 2m, 1h or 30.
duration_seconds() {
    local d=$1
    case $d in
    *h) echo $((${d%h} * 3600)) ;;
    *m) echo $((${d%m} * 60)) ;;
    *s) echo "${d%s}" ;;
    *) echo "$d" ;;
    esac
}

# CPU time (clock ticks) used so far by a process and its direct children (nginx's workers,
# gunicorn's workers).
cpu_ticks() {
    local pid total=0 t
    for pid in "$1" $(pgrep -P "$1" || true); do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null) || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# Peak resident memory (VmHWM, KiB) of a process plus its direct children, and its reset (writing
# 5 to clear_refs sets VmHWM back to the current RSS).
peak_rss_kib() {
    local pid total=0 k
    for pid in "$1" $(pgrep -P "$1" || true); do
        k=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || k=0
        total=$((total + ${k:-0}))
    done
    echo "$total"
}
reset_peak_rss() {
    local pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || log "warning: cannot reset VmHWM of pid $pid"
    done
}

# Runs wrk (WRK_THREADS, WRK_CONNECTIONS, WRK_DURATION, WRK_TIMEOUT, --latency) against URL
# with the given headers while measuring the CPU time of server process PID (and its children),
# keeps wrk's output in OUT, and prints one tab-separated line: req/s, MB/s, avg, p50, p90, p99
# and max latency (ms), requests, errors (socket errors and non-2xx/3xx answers) and the
# server's CPU ms per request. measure_wrk OUT PID URL [HEADER…]
measure_wrk() {
    local out=$1 pid=$2 url=$3 bound before after h
    shift 3
    local headers=()
    for h in "$@"; do headers+=(-H "$h"); done
    bound=$(($(duration_seconds "$WRK_DURATION") + $(duration_seconds "$WRK_TIMEOUT") + 30))
    before=$(cpu_ticks "$pid")
    timeout "$bound" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" \
        --timeout "$WRK_TIMEOUT" --latency "${headers[@]}" "$url" >"$out" 2>&1 ||
        die "wrk failed or overran ${bound}s: $(cat "$out")"
    after=$(cpu_ticks "$pid")
    awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
        function ms(v) {
            if (v ~ /us$/) return v / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /m$/) return v * 60000
            if (v ~ /s$/) return v * 1000
            return v + 0
        }
        function mb(v) {
            if (v ~ /GB$/) return v * 1024
            if (v ~ /MB$/) return v + 0
            if (v ~ /KB$/) return v / 1024
            return v / 1048576
        }
        $1 == "Latency" && avg == "" { avg = ms($2); max = ms($4) }
        $1 == "50%" { p50 = ms($2) }
        $1 == "90%" { p90 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $2 == "requests" && $3 == "in" { n = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /^Transfer\/sec:/ { tps = mb($2) }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { err += $5 }
        END {
            cpu = n > 0 ? 1000 * ticks / hz / n : 0
            printf "%.1f\t%.0f\t%.1f\t%.2f\t%.2f\t%.2f\t%.1f\t%d\t%d\t%.3f\n",
                rps, tps, avg, p50, p90, p99, max, n, err + 0, cpu
        }' "$out"
}

# One line about the machine: cores, CPU model, kernel.
machine_line() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    echo "$(nproc) cores${cpu:+ ($cpu)}, $(uname -sr)"
}

# Ends a report on $WORK/results.tsv: warns when the machine was busy (over 20 %) before some
# run, by the TSV's column BUSY_COLUMN, and writes the results under HEADER (tab-separated
# column names) to $BENCH_RESULTS when that is set. finish_report BUSY_COLUMN HEADER
finish_report() {
    if awk -F'\t' -v column="$1" '$column > 20 { bad = 1 } END { exit !bad }' "$WORK/results.tsv"; then
        echo "warning: the machine was busy before some runs (busy% column): other work skews these figures"
    fi
    if [[ -n ${BENCH_RESULTS:-} ]]; then
        {
            printf '%s\n' "$2"
            cat "$WORK/results.tsv"
        } >"$BENCH_RESULTS"
    fi
}
