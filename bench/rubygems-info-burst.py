#!/usr/bin/env python3
"""Burst of concurrent RubyGems `/info` requests right after pmcache fetched `/versions`.

pmcache answers `/rubygems/info/NAME` coherently with the `/versions` it serves: it parses the
cached `/versions` (tens of MB on rubygems.org) into a name -> info-MD5 map, once per version of
that file, and refetches an `/info` whose cached MD5 is not the listed one. Bundler asks for many
`/info` files at once, so this checks what a burst costs just after `/versions` changed: how long
it takes, how many `/info` fetches reach the upstream, and how much memory pmcache peaks at.

What it does (stdlib only, every socket on 127.0.0.1, bounded by timeouts):

1. Generates a compact index in memory: `/versions` (`created_at` line, `---`, then one line
   `gemNNNNNN 1.0.0 <md5 of its info body>` per gem) and `/info/gemNNNNNN` bodies
   (`---` then `1.0.0 |checksum:<sha256 hex>`).
2. Serves it from a ThreadingHTTPServer on 127.0.0.1:0, answering `/info` after `--info-delay`
   seconds (a distant upstream) and counting requests per path.
3. Starts `PMCACHE serve --listen 127.0.0.1:0 --data-dir <temp>` with the RubyGems upstream
   pointed at that server (other frontends disabled) and reads the address it prints.
4. GETs `/rubygems/versions` once (cold fill), then fires `--concurrency` GETs of the same
   `/rubygems/info/gem000001` at once, then as many GETs of different `/info` names at once.
   Last, `--concurrency` GETs of one more, not yet fetched, name at once: the `/versions` map
   is parsed by then, so this burst shows whether requests queued behind one upstream `/info`
   fetch share it or each fetch again. After each phase: wall time, upstream requests,
   pmcache's VmHWM (peak RSS since it started) and VmRSS.
5. Prints one table, stops pmcache, removes the temp dir.

    bench/rubygems-info-burst.py --pmcache target/debug/pmcache
    bench/rubygems-info-burst.py --pmcache target/release/pmcache --gems 400000 --concurrency 32
"""

import argparse
import hashlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREATED_AT = "created_at: 2024-06-02T00:00:00Z\n---\n"
REQUEST_TIMEOUT = 60.0
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def gem_name(i):
    return f"gem{i:06d}"


def info_body(name):
    checksum = hashlib.sha256(name.encode()).hexdigest()
    return f"---\n1.0.0 |checksum:{checksum}\n".encode()


def versions_body(gems):
    lines = [CREATED_AT]
    for i in range(1, gems + 1):
        name = gem_name(i)
        lines.append(f"{name} 1.0.0 {hashlib.md5(info_body(name)).hexdigest()}\n")
    return "".join(lines).encode()


class Upstream:
    """The fake rubygems.org: `/versions` and `/info/NAME`, requests counted per path."""

    def __init__(self, gems, info_delay):
        self.gems = gems
        self.info_delay = info_delay
        self.versions = versions_body(gems)
        self.counts = {}
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(head=True)

            def do_GET(self):
                self.answer(head=False)

            def answer(self, head):
                path = self.path.split("?", 1)[0]
                with upstream.lock:
                    upstream.counts[path] = upstream.counts.get(path, 0) + 1
                body = upstream.body(path)
                if path.startswith("/info/"):
                    time.sleep(upstream.info_delay)
                if body is None:
                    self.send_response(404)
                    body = b"not found\n"
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # the default 5 drops connections of a burst

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def body(self, path):
        if path == "/versions":
            return self.versions
        if path.startswith("/info/"):
            name = path[len("/info/"):]
            if len(name) == 9 and name.startswith("gem") and name[3:].isdigit():
                if 1 <= int(name[3:]) <= self.gems:
                    return info_body(name)
        return None

    def start(self):
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def count(self, prefix):
        with self.lock:
            return sum(n for path, n in self.counts.items() if path.startswith(prefix))


class Pmcache:
    def __init__(self, binary, upstream_port, data_dir, log_path):
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PMCACHE_") and k.lower() not in
            ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        }
        env.update({
            "PMCACHE_RUBYGEMS_UPSTREAM": f"http://127.0.0.1:{upstream_port}/",
            "PMCACHE_RUBYGEMS_METADATA_TTL": "5m",
            "PMCACHE_PYPI_ENABLED": "false",
            "PMCACHE_NPM_ENABLED": "false",
            "PMCACHE_PACKAGIST_ENABLED": "false",
            "NO_PROXY": "127.0.0.1,localhost",
        })
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log,
        )
        try:
            self.address = self.read_address()
        except BaseException:
            self.stop()
            raise
        # Keep draining stdout so pmcache never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def read_address(self):
        found = []
        reader = threading.Thread(
            target=lambda: found.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        line = found[0].decode(errors="replace").strip() if found else ""
        prefix = "pmcache listening on http://"
        if not line.startswith(prefix):
            raise RuntimeError(f"pmcache did not start (first stdout line: {line!r})")
        host, port = line[len(prefix):].rstrip("/").rsplit(":", 1)
        if host != "127.0.0.1":
            raise RuntimeError(f"pmcache listens on {host}, not 127.0.0.1")
        return ("127.0.0.1", int(port))

    def memory(self):
        """(VmHWM, VmRSS) in MiB."""
        values = {}
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
        return values["VmHWM"], values["VmRSS"]

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self.log.close()


def get(address, path):
    """(status, body) of one GET, on its own connection."""
    connection = http.client.HTTPConnection(*address, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", path, headers={"Accept-Encoding": "identity"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def burst(address, paths):
    """Fires every GET at once; (wall seconds, [(status, body)])."""
    results = [None] * len(paths)
    barrier = threading.Barrier(len(paths) + 1)

    def worker(i):
        barrier.wait()
        try:
            results[i] = get(address, paths[i])
        except Exception as error:  # noqa: BLE001 - reported as a failed request
            results[i] = (f"error: {error}", b"")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT + 5)
    seconds = time.monotonic() - started
    return seconds, [r if r is not None else ("no answer in time", b"") for r in results]


def check(results, expected):
    """'Nx 200 ok' when every answer is a 200 with the expected body, else what differed."""
    bad = [(s, len(b)) for (s, b), want in zip(results, expected) if s != 200 or b != want]
    if not bad:
        return f"{len(results)}x 200 ok"
    return f"{len(bad)} of {len(results)} wrong: {bad[:3]}"


def run(args, tmp):
    generated = time.monotonic()
    upstream = Upstream(args.gems, args.info_delay)
    generated = time.monotonic() - generated
    upstream.start()
    pmcache = None
    try:
        pmcache = Pmcache(args.pmcache, upstream.port, os.path.join(tmp, "data"),
                          os.path.join(tmp, "pmcache.log"))
        rows = []

        def phase(label, requests, seconds, results, expected, info_before, versions_before):
            hwm, rss = pmcache.memory()
            rows.append((label, requests, f"{seconds:.2f}",
                         str(upstream.count("/info/") - info_before),
                         str(upstream.count("/versions") - versions_before),
                         f"{hwm:.0f}", f"{rss:.0f}", check(results, expected)))

        hwm0, rss0 = pmcache.memory()
        rows.append(("pmcache started", "-", "-", "0", "0", f"{hwm0:.0f}", f"{rss0:.0f}", "-"))

        info0, versions0 = upstream.count("/info/"), upstream.count("/versions")
        seconds, results = burst(pmcache.address, ["/rubygems/versions"])
        phase("cold /versions", "1", seconds, results, [upstream.versions], info0, versions0)

        c = args.concurrency
        same = gem_name(1)
        info0, versions0 = upstream.count("/info/"), upstream.count("/versions")
        seconds, results = burst(pmcache.address, [f"/rubygems/info/{same}"] * c)
        phase(f"{c}x same /info", str(c), seconds, results, [info_body(same)] * c,
              info0, versions0)

        names = [gem_name(2 + i) for i in range(c)]
        info0, versions0 = upstream.count("/info/"), upstream.count("/versions")
        seconds, results = burst(pmcache.address, [f"/rubygems/info/{n}" for n in names])
        phase(f"{c}x distinct /info", str(c), seconds, results, [info_body(n) for n in names],
              info0, versions0)

        # The same burst again on a name not fetched yet: the /versions parse is done by now, so
        # this shows what queued requests do about one refetch on their own.
        again = gem_name(2 + c)
        info0, versions0 = upstream.count("/info/"), upstream.count("/versions")
        seconds, results = burst(pmcache.address, [f"/rubygems/info/{again}"] * c)
        phase(f"{c}x same /info, parsed", str(c), seconds, results, [info_body(again)] * c,
              info0, versions0)
    except BaseException:
        log = os.path.join(tmp, "pmcache.log")
        if os.path.exists(log):
            with open(log, "rb") as f:
                tail = f.read()[-4000:].decode(errors="replace")
            print(f"--- pmcache log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        if pmcache is not None:
            pmcache.stop()
        upstream.stop()

    print(f"pmcache:      {args.pmcache}")
    print(f"upstream:     {args.gems} gems, /versions {len(upstream.versions) / 1e6:.1f} MB "
          f"(generated in {generated:.1f} s), /info delay {args.info_delay} s")
    print(f"concurrency:  {args.concurrency}")
    header = ("phase", "requests", "wall s", "upstream /info", "upstream /versions",
              "VmHWM MiB", "VmRSS MiB", "answers")
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    line = "| " + " | ".join("{:<%d}" % w for w in widths) + " |"
    print(line.format(*header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line.format(*row))
    return all(row[-1] == "-" or row[-1].endswith(" ok") for row in rows)


def interrupted(signum, frame):
    """SIGTERM cleans up like Ctrl-C does."""
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pmcache", required=True, help="path to the pmcache binary")
    parser.add_argument("--gems", type=int, default=180000, help="gems in /versions (180000)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests per burst (16)")
    parser.add_argument("--info-delay", type=float, default=0.3,
                        help="seconds the upstream waits before answering /info (0.3)")
    args = parser.parse_args()
    if not 1 <= args.concurrency <= 512:
        parser.error("--concurrency must be 1..512")
    if not args.concurrency + 2 <= args.gems <= 999999:
        parser.error("--gems must be concurrency+2..999999")
    if not os.access(args.pmcache, os.X_OK):
        parser.error(f"{args.pmcache} is not an executable")
    args.pmcache = os.path.abspath(args.pmcache)

    signal.signal(signal.SIGTERM, interrupted)
    tmp = tempfile.mkdtemp(prefix="pmcache-info-burst-")
    try:
        ok = run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
