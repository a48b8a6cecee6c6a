#!/usr/bin/env python3
"""The benchmarks' static upstream: `python3 -m http.server`, plus one rule for registries.

A registry serves a document at `/registry/<name>` and files under `/registry/<name>/-/`, which
no directory tree can hold as plain files. So a directory that holds an `index.json` is served
as that file (with `application/json`), without the redirect to the slash form that
http.server sends for directories; anything else is served as http.server does. Each request is
logged to stderr as http.server does (`"GET /path HTTP/1.1" 200 -`), which the benchmarks count.

    python3 bench/lib/upstream.py --directory DIR [--port 0]

Listens on 127.0.0.1 only and prints `Serving HTTP on 127.0.0.1 port N` once it accepts.
"""

import argparse
import functools
import http.server
import os
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    """http.server's handler where a directory with an `index.json` is that file."""

    protocol_version = "HTTP/1.1"  # keep-alive, as registries do

    def translate_path(self, path):
        local = super().translate_path(path)
        document = os.path.join(local, "index.json")
        if os.path.isdir(local) and os.path.isfile(document):
            return document
        return local


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--directory", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    handler = functools.partial(Handler, directory=args.directory)
    http.server.ThreadingHTTPServer.daemon_threads = True
    with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        print(f"Serving HTTP on 127.0.0.1 port {server.server_address[1]}", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
