#!/usr/bin/env python3
"""Write the static upstream that bench/run.sh serves on 127.0.0.1 (bench/lib/upstream.py): a PyPI project and an npm
package with files of chosen sizes.

Layout under --out (served by bench/lib/upstream.py):

    simple/index.html                the project list (one project)
    simple/<project>/index.html      PEP 503 page: --page-files links, each with #sha256= and
                                     data-requires-python, newest last; three of them are real:
    files/<project>-0.1.0-py3-none-any.whl   --small-bytes  (the "1.5 KB wheel")
    files/<project>-0.2.0-py3-none-any.whl   --wheel-bytes  (the "2 MB wheel")
    files/<project>-0.3.0.tar.gz             --big-bytes    (the "20 MB file")
    registry/<package>               full packument of one version, 1.0.0, whose tarball is
    registry/<package>/-/<package>-1.0.0.tgz  --tarball-bytes (the "1 MB tarball")

The big packument comes from gen_packument.py. Every file's bytes are pseudo-random from a fixed
seed, so the same arguments always give the same bytes (and the same digests). The links of the
versions that have no file point at paths that do not exist: no client of the benchmark follows
them. Prints one JSON object naming each file's path, size and sha256.

    bench/gen_upstream.py --out DIR --base http://127.0.0.1:8000/
"""

import argparse
import base64
import hashlib
import json
import os
import random


def blob(seed, size):
    """`size` pseudo-random bytes, the same for the same seed on every Python 3.9+."""
    return random.Random(seed).randbytes(size)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)


def pypi(out, project, page_files, sizes):
    """The project page and its three real files; returns {label: (path, size, sha256)}."""
    real = {
        "small": (f"{project}-0.1.0-py3-none-any.whl", sizes["small"]),
        "wheel": (f"{project}-0.2.0-py3-none-any.whl", sizes["wheel"]),
        "big": (f"{project}-0.3.0.tar.gz", sizes["big"]),
    }
    files = {}
    links = []
    for label, (name, size) in real.items():
        data = blob(f"{project}/{name}", size)
        write(os.path.join(out, "files", name), data)
        digest = hashlib.sha256(data).hexdigest()
        files[label] = {"path": f"/files/{name}", "name": name, "bytes": size, "sha256": digest}
        links.append((name, digest))
    # The other releases: a wheel for two platforms and an sdist each, as a project with
    # compiled extensions publishes them.
    fillers = []
    version = 0
    while len(fillers) + len(links) < page_files:
        version += 1
        stem = f"{project}-1.{version // 10}.{version % 10}"
        for name in (f"{stem}-cp312-cp312-manylinux_2_17_x86_64.whl",
                     f"{stem}-cp312-cp312-win_amd64.whl", f"{stem}.tar.gz"):
            fillers.append((name, hashlib.sha256(name.encode()).hexdigest()))
    links = links + fillers[: page_files - len(links)]
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta name="pypi:repository-version" content="1.0">'
        f"<title>Links for {project}</title></head>",
        f"<body><h1>Links for {project}</h1>",
    ]
    for name, digest in links:
        lines.append(f'<a href="/files/{name}#sha256={digest}" '
                     f'data-requires-python="&gt;=3.8">{name}</a><br>')
    lines.append("</body></html>")
    page = ("\n".join(lines) + "\n").encode()
    write(os.path.join(out, "simple", project, "index.html"), page)
    # The index's project list: devpi reads it before it asks for a project page.
    write(os.path.join(out, "simple", "index.html"),
          f'<!DOCTYPE html>\n<html><body><a href="{project}/">{project}</a></body></html>\n'.encode())
    files["page"] = {"path": f"/simple/{project}/", "bytes": len(page), "links": len(links)}
    return files


def npm(out, base, package, size):
    """A one-version packument whose tarball has `size` bytes."""
    data = blob(f"{package}/tarball", size)
    name = f"{package}-1.0.0.tgz"
    write(os.path.join(out, "registry", package, "-", name), data)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    manifest = {
        "name": package,
        "version": "1.0.0",
        "description": "a package with a large tarball, for bench/run.sh",
        "license": "MIT",
        "dependencies": {},
        "_id": f"{package}@1.0.0",
        "dist": {
            "tarball": f"{base}registry/{package}/-/{name}",
            "shasum": hashlib.sha1(data).hexdigest(),
            "integrity": integrity,
            "fileCount": 1,
            "unpackedSize": size,
        },
    }
    packument = {
        "_id": package,
        "name": package,
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": manifest},
        "time": {
            "created": "2026-01-01T00:00:00.000Z",
            "modified": "2026-01-01T00:00:00.000Z",
            "1.0.0": "2026-01-01T00:00:00.000Z",
        },
        "license": "MIT",
    }
    # A static tree cannot hold both `registry/<package>` and `registry/<package>/-/…`: the
    # document is `registry/<package>/index.json`, which bench/lib/upstream.py serves at
    # `/registry/<package>`.
    document = json.dumps(packument, separators=(",", ":")).encode()
    write(os.path.join(out, "registry", package, "index.json"), document)
    return {
        "packument": f"/registry/{package}",
        "tarball": {"path": f"/registry/{package}/-/{name}", "bytes": size,
                    "sha256": hashlib.sha256(data).hexdigest()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write into")
    parser.add_argument("--base", required=True, help="the upstream's base URL, ending in /")
    parser.add_argument("--project", default="benchpkg")
    parser.add_argument("--package", default="bench-tarball")
    parser.add_argument("--page-files", type=int, default=1200)
    parser.add_argument("--small-bytes", type=int, default=1536)
    parser.add_argument("--wheel-bytes", type=int, default=2 * 1024 * 1024)
    parser.add_argument("--big-bytes", type=int, default=20 * 1024 * 1024)
    parser.add_argument("--tarball-bytes", type=int, default=1024 * 1024)
    args = parser.parse_args()
    if not args.base.startswith("http://127.0.0.1:") or not args.base.endswith("/"):
        parser.error("--base must be http://127.0.0.1:PORT/ (a loopback upstream)")
    if args.page_files < 3:
        parser.error("--page-files must be at least 3")
    sizes = {"small": args.small_bytes, "wheel": args.wheel_bytes, "big": args.big_bytes}
    summary = {
        "pypi": pypi(args.out, args.project, args.page_files, sizes),
        "npm": npm(args.out, args.base, args.package, args.tarball_bytes),
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
