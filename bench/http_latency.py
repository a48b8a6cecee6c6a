#!/usr/bin/env python3
"""Per-request latency of GETs over kept-alive HTTP/1.1 connections, measured one by one.

Each of `--connections` threads opens one connection and sends `--requests / --connections`
GETs on it, one after the other, timing each from the request's send to its body's last byte
with a monotonic clock. Nothing is pipelined and nothing is averaged away, so a server that
holds a small answer back (Nagle's algorithm against the client's delayed ACK: ~40 ms on Linux)
shows in the upper percentiles. Every answer must be a 200 whose body has `--sha256` (when
given); others are counted as errors.

Prints one tab-separated line: requests, errors, mean, p50, p90, p99 and max in milliseconds
(`--header-line` prints the column names first, `--wall` adds the whole run's seconds).
`--connections 200 --requests 200 --warmup 0` is 200 downloads at once, one per connection;
bodies are hashed as they arrive, never held whole.

    bench/http_latency.py http://127.0.0.1:8080/file --requests 2000
    bench/http_latency.py http://127.0.0.1:8080/file --requests 2000 --connections 8 \\
        --header 'Accept: application/json' --sha256 HEX
"""

import argparse
import hashlib
import http.client
import math
import sys
import threading
import time
import urllib.parse


def percentile(ordered, fraction):
    """Nearest-rank percentile of sorted values."""
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def worker(url, headers, count, sha256, timeout, warmup, latencies, errors):
    """`warmup` untimed GETs, then `count` timed ones, on one kept-alive connection."""
    connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    path = url.path or "/"
    try:
        for number in range(warmup + count):
            started = time.perf_counter()
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                # Read and hashed in pieces: 200 connections of a 20 MB body at once must not
                # hold 4 GB here.
                digest, size = hashlib.sha256(), 0
                while chunk := response.read(256 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
            except (OSError, http.client.HTTPException) as error:
                errors.append(f"{type(error).__name__}: {error}")
                connection.close()
                continue
            seconds = time.perf_counter() - started
            if response.status != 200:
                errors.append(f"HTTP {response.status}")
            elif sha256 and digest.hexdigest() != sha256:
                errors.append(f"wrong body ({size} bytes)")
            elif number >= warmup:
                latencies.append(seconds * 1000)
            if response.will_close:
                errors.append("the server closed the connection")
                connection.close()
    finally:
        connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="http://127.0.0.1:PORT/PATH (loopback only)")
    parser.add_argument("--requests", type=int, default=2000, help="timed GETs in all (2000)")
    parser.add_argument("--connections", type=int, default=1,
                        help="connections, each on a thread, sending in turn (1)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="untimed GETs per connection first (20)")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--sha256", help="expected sha256 of every body")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (10)")
    parser.add_argument("--header-line", action="store_true", help="print the column names")
    parser.add_argument("--wall", action="store_true",
                        help="add a column: seconds from the first connection's start to the last's end")
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "http" or url.hostname != "127.0.0.1":
        parser.error("only http://127.0.0.1 URLs: this is a loopback benchmark")
    if not 1 <= args.connections <= 256 or not args.connections <= args.requests <= 100000:
        parser.error("--connections must be 1..256 and --requests connections..100000")
    headers = dict(line.split(":", 1) for line in args.header)
    headers = {name.strip(): value.strip() for name, value in headers.items()}
    headers.setdefault("Accept-Encoding", "identity")

    latencies, errors = [], []
    share, extra = divmod(args.requests, args.connections)
    threads = [
        threading.Thread(target=worker, args=(url, headers, share + (i < extra), args.sha256,
                                              args.timeout, args.warmup, latencies, errors))
        for i in range(args.connections)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if args.header_line:
        print("requests\terrors\tmean ms\tp50 ms\tp90 ms\tp99 ms\tmax ms" +
              ("\twall s" if args.wall else ""))
    ordered = sorted(latencies)
    if not ordered:
        print(f"0\t{len(errors)}\t-\t-\t-\t-\t-" + (f"\t{wall:.3f}" if args.wall else ""))
        print(f"no request succeeded; first error: {errors[:1]}", file=sys.stderr)
        return 1
    print(f"{len(ordered)}\t{len(errors)}\t{sum(ordered) / len(ordered):.2f}\t"
          f"{percentile(ordered, 0.50):.2f}\t{percentile(ordered, 0.90):.2f}\t"
          f"{percentile(ordered, 0.99):.2f}\t{ordered[-1]:.2f}" +
          (f"\t{wall:.3f}" if args.wall else ""))
    if errors:
        print(f"{len(errors)} errors, first: {errors[:3]}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
