#!/usr/bin/env python3
"""Cold PyPI project pages, 50 at a time: through pmcache and directly, side by side.

pip and uv ask for every project page of a requirement set at once (uv keeps up to 50 requests
in flight). This asks for the project pages of 88 real, popular packages, `--concurrency` at a
time, with pip's `Accept` header, against the live index the local pip would use, and through a
cold pmcache (a fresh data dir every round) that finds the same index by itself
(`pypi.upstream = "auto"`). Rounds alternate direct and pmcache, so both see the upstream in the
same state, and each round reports its wall time, the count of each status, and the p50, p99 and
max latency of a request (from sending it to the last byte of its body).

What it does (stdlib only; pmcache listens on 127.0.0.1; every request has a timeout):

1. Learns the index the way pmcache's `auto` does: `python3 -m pip config list`
   (`:env:.index-url`, then `install.index-url`, then `global.index-url`), else pip's built-in
   default. Asks it for one page; when that fails, prints `cold-pages: SKIPPED (reason)` and
   exits 0 without building anything.
2. Builds pmcache once with `cargo build --release --locked` (unless `--pmcache` names a binary)
   and copies the binary into the temp dir, so that another build cannot swap it mid-run.
3. For each round: direct, then pmcache started on a new data dir with the caller's environment
   (less `PMCACHE_*` variables: pmcache must see what the local pip sees), the PyPI frontend
   only, logging at info into the temp dir. Every worker thread keeps one connection (HTTPS to
   the index, plain HTTP to pmcache) and reuses it, as pip's and uv's pools do; the index's name
   is resolved once per round, before the clock starts.
4. Prints the table and the medians, stops pmcache and removes the temp dir (`--keep` keeps it,
   with pmcache's logs).

    bench/cold-pages.py
    bench/cold-pages.py --rounds 5 --concurrency 32
    bench/cold-pages.py --pmcache target/release/pmcache --keep
"""

import argparse
import concurrent.futures
import http.client
import json
import math
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

# The project pages of a typical hash-pinned set: web, cloud, docs, test and CLI stacks with
# their dependencies, plus four packages whose pages are large (thousands of files).
PACKAGES = """
alabaster anyio attrs babel beautifulsoup4 blinker boto3 botocore cachetools certifi cffi
charset-normalizer click colorama cryptography decorator distlib docutils filelock flask
google-auth h11 httpcore httpx idna imagesize importlib-metadata iniconfig isodate itsdangerous
jinja2 jmespath jsonschema jsonschema-specifications lazy-importer markdown markdown-it-py
markupsafe mdurl more-itertools oauthlib packaging platformdirs pluggy prompt-toolkit pyasn1
pyasn1-modules pycparser pygments pyparsing pytest python-dateutil python-discovery pytz pyyaml
referencing requests requests-oauthlib rich roman-numerals rpds-py s3transfer six
snowballstemmer sortedcontainers soupsieve sphinx sphinxcontrib-applehelp sphinxcontrib-devhelp
sphinxcontrib-htmlhelp sphinxcontrib-jsmath sphinxcontrib-qthelp sphinxcontrib-serializinghtml
tabulate tomlkit tqdm typing-extensions tzdata urllib3 virtualenv wcwidth websocket-client
werkzeug zipp numpy setuptools wheel pip
""".split()

# What pip sends for a project page (pip's `_get_simple_response`), and what its HTTP library
# accepts as encodings.
PIP_HEADERS = {
    "Accept": "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
              "text/html; q=0.01",
    "Accept-Encoding": "gzip, deflate",
    "User-Agent": "pmcache-bench-cold-pages",
}

# pip's configuration keys for the index, best first: the order pmcache's discovery uses.
INDEX_KEYS = (":env:.index-url", "install.index-url", "global.index-url")

PROBE_TIMEOUT = 15.0
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def log(message):
    print(f"[cold-pages {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pip_output(args):
    """stdout of `python3 -m pip ARGS`, or None when pip cannot run."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=60,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def discover_index():
    """(index URL ending in '/', where it came from), as pmcache's `auto` finds it."""
    listing = pip_output(["config", "list"]) or ""
    for key in INDEX_KEYS:
        for line in listing.splitlines():
            if line.startswith(key + "="):
                value = line[len(key) + 1:].strip().strip("'\"").split()
                if value and value[0].startswith(("http://", "https://")):
                    return value[0].rstrip("/") + "/", f"pip config {key}"
    default = subprocess.run(
        [sys.executable, "-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"],
        capture_output=True, text=True, timeout=60, check=False).stdout.strip()
    if not default.startswith(("http://", "https://")):
        return None, "pip's built-in default index could not be read"
    return default.rstrip("/") + "/", "pip's built-in default"


# `Pinned`, HTTPS to an address resolved beforehand (TLS still names the host), is the live page
# tests' client's: one definition for both.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "fixtures", "live"))
from concurrent_get import Pinned  # noqa: E402  (needs the path above)


class Client:
    """GETs of project pages under `base` with pip's headers, one kept-alive connection per
    worker thread. The host is resolved once, when the client is made: fifty resolver queries at
    once test the local resolver (here some took 5 s, or failed), not the index, and pmcache too
    resolves its upstream once."""

    def __init__(self, base, timeout):
        url = urllib.parse.urlsplit(base)
        self.https = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if self.https else 80)
        self.path = url.path
        self.timeout = timeout
        self.tls = ssl.create_default_context() if self.https else None
        self.address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][4][0]
        self.local = threading.local()
        self.opened = []
        self.lock = threading.Lock()

    def connection(self):
        connection = getattr(self.local, "connection", None)
        if connection is None:
            if self.https:
                connection = Pinned(self.host, self.port, self.address, timeout=self.timeout,
                                    context=self.tls)
            else:
                connection = http.client.HTTPConnection(self.address, self.port,
                                                        timeout=self.timeout)
            self.local.connection = connection
            with self.lock:
                self.opened.append(connection)
        return connection

    def get(self, project):
        """(status or error text, body bytes, seconds from send to the body's last byte)."""
        started = time.perf_counter()
        for attempt in (1, 2):
            connection = self.connection()
            try:
                connection.request("GET", f"{self.path}{project}/", headers=PIP_HEADERS)
                response = connection.getresponse()
                body = response.read()
                if response.will_close:
                    connection.close()
                    self.local.connection = None
                return response.status, len(body), time.perf_counter() - started
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
                # A kept-alive connection the server had closed: one retry on a new one, as
                # pip's and uv's pools do; the time it cost stays in the figure.
                connection.close()
                self.local.connection = None
                if attempt == 2:
                    return f"error: {type(error).__name__}", 0, time.perf_counter() - started
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                self.local.connection = None
                return f"error: {type(error).__name__}", 0, time.perf_counter() - started
        raise AssertionError("unreachable")

    def close(self):
        with self.lock:
            for connection in self.opened:
                connection.close()
            self.opened.clear()


def run_round(base, concurrency, timeout):
    """Every page, `concurrency` at a time: (wall seconds, [(status, bytes, seconds)])."""
    client = Client(base, timeout)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
            started = time.perf_counter()
            results = list(pool.map(client.get, PACKAGES))
            return time.perf_counter() - started, results
    finally:
        client.close()


def percentile(values, fraction):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class Pmcache:
    """pmcache on 127.0.0.1:0 over a fresh data dir, PyPI frontend only, upstream `auto`."""

    def __init__(self, binary, data_dir, log_path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PMCACHE_")}
        env.update({
            "PMCACHE_LOG_FILTER": "info",
            "PMCACHE_NPM_ENABLED": "false",
            "PMCACHE_RUBYGEMS_ENABLED": "false",
            "PMCACHE_PACKAGIST_ENABLED": "false",
            "NO_COLOR": "1",
        })
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log)
        try:
            self.url = self.read_url()
        except BaseException:
            self.stop()
            raise
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def read_url(self):
        found = []
        reader = threading.Thread(
            target=lambda: found.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        line = found[0].decode(errors="replace").strip() if found else ""
        prefix = "pmcache listening on http://127.0.0.1:"
        if not line.startswith(prefix):
            raise RuntimeError(f"pmcache did not start (stdout: {line!r}); log: {self.log_path}")
        return line[len("pmcache listening on "):].rstrip("/")

    def discovered(self):
        """The upstream pmcache logged as discovered, if it did."""
        with open(self.log_path, errors="replace") as text:
            for line in text:
                if "PyPI upstream discovered" in line and "upstream=" in line:
                    return line.split("upstream=", 1)[1].split()[0]
        return None

    def peak_rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self):
        """User plus system CPU time pmcache has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self.log.close()


def build_pmcache(tmp):
    """`cargo build --release --locked` in the repo; the binary, copied into `tmp`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    log("cargo build --release --locked (the first build takes several minutes on 2 cores)")
    subprocess.run(["cargo", "build", "--release", "--locked"], cwd=root, check=True,
                   stdout=sys.stderr)
    metadata = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=root, check=True,
        capture_output=True, text=True).stdout
    binary = os.path.join(json.loads(metadata)["target_directory"], "release", "pmcache")
    copy = os.path.join(tmp, "pmcache")
    shutil.copy2(binary, copy)
    return copy


def describe(statuses):
    counts = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return " ".join(f"{count}x{status}" for status, count in sorted(counts.items(), key=str))


def main_with(args, tmp):
    index, source = discover_index()
    if index is None:
        print(f"cold-pages: SKIPPED ({source})")
        return 0
    log(f"index: {index} ({source})")
    try:
        status, _, seconds = Client(index, PROBE_TIMEOUT).get(PACKAGES[0])
    except OSError as error:
        status, seconds = f"error: {error}", 0.0
    if status != 200:
        print(f"cold-pages: SKIPPED (the index the local pip uses is unreachable: "
              f"GET {index}{PACKAGES[0]}/ gave {status} after {seconds:.1f} s)")
        return 0

    binary = args.pmcache or build_pmcache(tmp)
    rows = []
    for number in range(1, args.rounds + 1):
        for target in ("direct", "pmcache"):
            pmcache = None
            rss = cpu = "-"
            if target == "direct":
                base = index
            else:
                pmcache = Pmcache(binary, os.path.join(tmp, f"data-{number}"),
                                  os.path.join(tmp, f"pmcache-{number}.log"))
                base = f"{pmcache.url}/pypi/simple/"
                found = pmcache.discovered()
                if found is not None and found.rstrip("/") + "/" != index:
                    log(f"warning: pmcache discovered {found}, this script {index}")
            try:
                log(f"round {number}: {target}, {len(PACKAGES)} pages, {args.concurrency} at a time")
                wall, results = run_round(base, args.concurrency, args.timeout)
                if pmcache is not None:
                    rss = f"{pmcache.peak_rss_mib():.0f}"
                    cpu = f"{pmcache.cpu_seconds():.2f}"
            finally:
                if pmcache is not None:
                    pmcache.stop()
            latencies = [seconds * 1000 for _, _, seconds in results]
            rows.append((
                str(number), target, f"{wall:.2f}", describe([s for s, _, _ in results]),
                f"{percentile(latencies, 0.50):.0f}", f"{percentile(latencies, 0.99):.0f}",
                f"{max(latencies):.0f}", f"{sum(b for _, b, _ in results) / 1e6:.1f}", rss, cpu,
            ))

    print(f"cold project pages: {len(PACKAGES)} pages, {args.concurrency} at a time, "
          f"{args.rounds} rounds each, pip's Accept header; pmcache cold every round")
    print(f"  machine: {os.cpu_count()} cores; pmcache: {args.pmcache or 'release build'}")
    header = ("round", "target", "total s", "statuses", "p50 ms", "p99 ms", "max ms",
              "MB received", "pmcache VmHWM MiB", "pmcache CPU s")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    line = "| " + " | ".join("{:<%d}" % width for width in widths) + " |"
    print(line.format(*header))
    print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for row in rows:
        print(line.format(*row))
    medians = {}
    for target in ("direct", "pmcache"):
        medians[target] = statistics.median(float(row[2]) for row in rows if row[1] == target)
    print(f"median total: direct {medians['direct']:.2f} s, pmcache {medians['pmcache']:.2f} s, "
          f"pmcache/direct {medians['pmcache'] / medians['direct']:.2f}x")
    failed = [row for row in rows if row[3] != f"{len(PACKAGES)}x200"]
    if failed:
        print(f"warning: {len(failed)} round(s) had answers other than 200 (statuses column)")
    return 1 if any(row[1] == "pmcache" for row in failed) else 0


def interrupted(signum, frame):
    """SIGTERM cleans up like Ctrl-C does."""
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pmcache", help="pmcache binary (default: cargo build --release --locked)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each target (3)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight (50)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one request may take (120)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (pmcache logs)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be 1..20")
    if not 1 <= args.concurrency <= len(PACKAGES):
        parser.error(f"--concurrency must be 1..{len(PACKAGES)}")
    if args.pmcache is not None:
        if not os.access(args.pmcache, os.X_OK):
            parser.error(f"{args.pmcache} is not an executable")
        args.pmcache = os.path.abspath(args.pmcache)

    signal.signal(signal.SIGTERM, interrupted)
    tmp = tempfile.mkdtemp(prefix="pmcache-cold-pages-")
    try:
        return main_with(args, tmp)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
