#!/usr/bin/env python3
"""Time from exec to the first `200` from `/healthz`, over several runs of a server.

Each run takes a free 127.0.0.1 port and a fresh empty data dir under --workdir, substitutes
them for `{port}` and `{data}` in the command, starts it (the environment is this process's),
asks `GET /healthz` every millisecond until one answers 200, then stops the server with SIGTERM
(SIGKILL after 10 s) and waits for it. Prints one tab-separated line: runs, median, min and max
in milliseconds, then every run's figure separated by commas.

    bench/lib/startup.py --runs 7 --workdir DIR -- pmcache serve --listen 127.0.0.1:{port} \\
        --data-dir {data}
"""

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(port):
    """True once /healthz answers 200; False while nothing listens or it answers otherwise."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def one_run(command, workdir, number, timeout):
    port = free_port()
    data = os.path.join(workdir, f"data-{number}")
    os.makedirs(data)
    argv = [part.replace("{port}", str(port)).replace("{data}", data) for part in command]
    with open(os.path.join(workdir, f"run-{number}.log"), "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            while not healthy(port):
                if process.poll() is not None:
                    raise SystemExit(f"run {number}: the server exited with {process.returncode}"
                                     f" (log: {log.name})")
                if time.perf_counter() - started > timeout:
                    raise SystemExit(f"run {number}: no 200 from /healthz after {timeout} s")
                time.sleep(0.001)  # the polling interval, which bounds the figure's resolution
            return (time.perf_counter() - started) * 1000
        finally:
            stop(process)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workdir", required=True, help="where data dirs and logs go")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per run (30)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- then the server's command line, with {port} and {data}")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not any("{port}" in part for part in command):
        parser.error("give the command after --, with {port} where the port goes")
    if not 1 <= args.runs <= 100:
        parser.error("--runs must be 1..100")
    figures = [one_run(command, args.workdir, number, args.timeout)
               for number in range(1, args.runs + 1)]
    print(f"{len(figures)}\t{statistics.median(figures):.1f}\t{min(figures):.1f}\t"
          f"{max(figures):.1f}\t" + ",".join(f"{f:.1f}" for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
