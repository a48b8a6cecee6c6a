#!/usr/bin/env python3
"""Write a deterministic synthetic npm packument (full document) of a chosen size.

The document looks like a large real packument (think of a framework with thousands of stable,
canary and release-candidate versions): per version a package.json with dependencies,
devDependencies, optional platform packages, peer dependencies, scripts, engines, bin, plus the
registry's own fields (`_id`, `_npmUser`, `dist` with `tarball`, `integrity`, `shasum`,
`fileCount`, `unpackedSize`, `signatures`) and a `time` entry for every version.

Output is compact JSON, like the registry sends. The same arguments always give the same bytes:
all "randomness" comes from `random.Random(seed).random()`, whose sequence Python guarantees
across versions, and digests are hashes of the version's name.

    python3 gen_packument.py --name bench-big --tarball-base http://127.0.0.1:8000/registry/ \
        --target-bytes 30000000 --out packument.json
"""

import argparse
import base64
import hashlib
import json
import random
import sys
from datetime import datetime, timedelta, timezone

DEP_POOL = [
    "@babel/core", "@babel/runtime", "@babel/types", "@swc/helpers", "@types/node",
    "@types/react", "@types/react-dom", "@rollup/plugin-commonjs", "@rollup/plugin-node-resolve",
    "@opentelemetry/api", "@playwright/test", "@edge-runtime/cookies", "@edge-runtime/primitives",
    "@vercel/ncc", "@vercel/og", "acorn", "ajv", "amphtml-validator", "anser", "arg",
    "assert", "async-sema", "browserslist", "buffer", "busboy", "bytes", "caniuse-lite",
    "chalk", "ci-info", "cli-select", "client-only", "commander", "comment-json", "compression",
    "conf", "constants-browserify", "content-disposition", "cookie", "cross-spawn",
    "crypto-browserify", "css.escape", "cssnano-preset-default", "data-uri-to-buffer",
    "debug", "devalue", "domain-browser", "edge-runtime", "events", "find-up", "fresh",
    "glob", "graceful-fs", "gzip-size", "http-proxy", "http-proxy-agent", "https-browserify",
    "https-proxy-agent", "icss-utils", "ignore-loader", "image-size", "is-docker",
    "is-wsl", "jest-worker", "json5", "jsonwebtoken", "loader-runner", "loader-utils",
    "lodash.curry", "lru-cache", "mini-css-extract-plugin", "nanoid", "native-url",
    "neo-async", "node-html-parser", "ora", "os-browserify", "p-limit", "path-browserify",
    "picomatch", "postcss", "postcss-flexbugs-fixes", "postcss-modules-extract-imports",
    "postcss-modules-local-by-default", "postcss-modules-scope", "postcss-modules-values",
    "postcss-preset-env", "postcss-safe-parser", "postcss-scss", "postcss-value-parser",
    "process", "punycode", "querystring-es3", "raw-body", "react-is", "react-refresh",
    "regenerator-runtime", "sass-loader", "schema-utils", "semver", "send", "server-only",
    "setimmediate", "shell-quote", "source-map", "source-map-js", "stacktrace-parser",
    "stream-browserify", "stream-http", "string-hash", "string_decoder", "strip-ansi",
    "styled-jsx", "superstruct", "tar", "terser", "text-table", "timers-browserify",
    "tty-browserify", "typescript", "ua-parser-js", "unistore", "util", "vm-browserify",
    "watchpack", "web-vitals", "webpack", "webpack-sources", "ws", "zod",
]

PLATFORMS = [
    "darwin-arm64", "darwin-x64", "linux-arm64-gnu", "linux-arm64-musl", "linux-x64-gnu",
    "linux-x64-musl", "win32-arm64-msvc", "win32-ia32-msvc", "win32-x64-msvc",
]

USERS = [
    ("release-bot", "release-bot@example.test"),
    ("ada", "ada@example.test"),
    ("grace", "grace@example.test"),
    ("linus", "linus@example.test"),
]

README = (
    "# {name}\n\nA synthetic package generated for pmcache's packument benchmark. It has the shape "
    "of a large real packument: thousands of versions, each with dependencies, devDependencies, "
    "optional platform packages and registry metadata.\n\n"
    "## Install\n\n```sh\nnpm install {name}\n```\n\n"
    "## Usage\n\n```js\nconst bench = require('{name}');\nbench.run();\n```\n\n"
) * 8


class Rng:
    """Only `random()` is used: its sequence for a given seed is stable across Pythons."""

    def __init__(self, seed):
        self._r = random.Random(seed)

    def below(self, n):
        return min(int(self._r.random() * n), n - 1)

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def sample(self, seq, k):
        pool = list(seq)
        out = []
        for _ in range(min(k, len(pool))):
            out.append(pool.pop(self.below(len(pool))))
        return out


def digest(kind, text, size):
    data = b""
    counter = 0
    while len(data) < size:
        data += hashlib.sha256(f"{kind}:{counter}:{text}".encode()).digest()
        counter += 1
    return data[:size]


def version_sequence():
    """Yield versions in publish order: stable releases with canaries and rcs in between."""
    major, minor, patch = 9, 0, 0
    while True:
        for canary in range(1, 13):
            yield f"{major}.{minor}.{patch + 1}-canary.{canary}"
        patch += 1
        yield f"{major}.{minor}.{patch}"
        if patch % 8 == 0:
            for rc in range(4):
                yield f"{major}.{minor + 1}.0-rc.{rc}"
            minor, patch = minor + 1, 0
            yield f"{major}.{minor}.{patch}"
            if minor % 6 == 0:
                major, minor = major + 1, 0
                yield f"{major}.{minor}.{patch}"


def dep_range(rng):
    return rng.pick(["^", "~", "", ">="]) + f"{rng.below(20)}.{rng.below(30)}.{rng.below(15)}"


class Manifest:
    """Dependencies drift slowly from one version to the next, as in real packages."""

    def __init__(self, rng):
        self.rng = rng
        self.deps = {d: dep_range(rng) for d in rng.sample(DEP_POOL, 16)}
        self.dev = {d: dep_range(rng) for d in rng.sample(DEP_POOL, 75)}

    def step(self):
        rng = self.rng
        for table, size in ((self.deps, 16), (self.dev, 75)):
            for _ in range(rng.below(3)):
                table[rng.pick(sorted(table))] = dep_range(rng)
            if rng.below(10) == 0:
                table.pop(rng.pick(sorted(table)))
            while len(table) < size:
                table.setdefault(rng.pick(DEP_POOL), dep_range(rng))
        return dict(sorted(self.deps.items())), dict(sorted(self.dev.items()))


def version_object(rng, manifest, name, version, tarball_base):
    bare = name.split("/")[-1]
    user = rng.pick(USERS)
    deps, dev = manifest.step()
    optional = {f"@{bare}/swc-{p}": version for p in PLATFORMS}
    tarball_digest = f"{name}@{version}"
    integrity = "sha512-" + base64.b64encode(digest("sha512", tarball_digest, 64)).decode()
    signature = base64.b64encode(digest("sig", tarball_digest, 71)).decode()
    return {
        "name": name,
        "version": version,
        "description": "The synthetic framework of pmcache's packument benchmark",
        "main": "./dist/server/lib/index.js",
        "types": "index.d.ts",
        "license": "MIT",
        "author": {"name": "Bench Authors", "email": "bench@example.test"},
        "homepage": "https://example.test/bench",
        "repository": {"type": "git", "url": f"git+https://git.example.test/bench/{bare}.git"},
        "bugs": {"url": f"https://git.example.test/bench/{bare}/issues"},
        "keywords": ["react", "framework", "ssr", "bench"],
        "bin": {bare: "dist/bin/" + bare},
        "files": ["dist", "app.js", "app.d.ts", "index.d.ts", "types", "server.js", "client.js"],
        "scripts": {
            "dev": "taskr",
            "release": "taskr release",
            "build": "pnpm release",
            "prepublishOnly": "cd ../../ && turbo run build",
            "types": "tsc --project tsconfig.build.json --declaration --emitDeclarationOnly",
        },
        "engines": {"node": rng.pick([">=18.17.0", "^18.18.0 || ^19.8.0 || >= 20.0.0"])},
        "dependencies": deps,
        "devDependencies": dev,
        "optionalDependencies": optional,
        "peerDependencies": {
            "react": "^18.2.0 || ^19.0.0",
            "react-dom": "^18.2.0 || ^19.0.0",
            "sass": "^1.3.0",
            "@opentelemetry/api": "^1.1.0",
        },
        "peerDependenciesMeta": {
            "sass": {"optional": True},
            "@opentelemetry/api": {"optional": True},
        },
        "gitHead": digest("git", tarball_digest, 20).hex(),
        "_id": f"{name}@{version}",
        "_nodeVersion": rng.pick(["18.19.1", "20.11.1", "20.18.0", "22.12.0"]),
        "_npmVersion": rng.pick(["9.8.1", "10.2.4", "10.8.2"]),
        "_npmUser": {"name": user[0], "email": user[1]},
        "maintainers": [{"name": u, "email": e} for u, e in USERS],
        "dist": {
            "integrity": integrity,
            "shasum": digest("sha1", tarball_digest, 20).hex(),
            "tarball": f"{tarball_base}{name}/-/{bare}-{version}.tgz",
            "fileCount": 2000 + rng.below(9000),
            "unpackedSize": 20_000_000 + rng.below(100_000_000),
            "signatures": [{"keyid": "SHA256:bench-key-0001", "sig": "MEUCIQ" + signature}],
        },
        "directories": {},
        "_hasShrinkwrap": False,
    }


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def generate(name, tarball_base, target_bytes, seed):
    rng = Rng(seed)
    manifest = Manifest(rng)
    versions = {}
    times = {}
    moment = datetime(2016, 10, 25, 12, 0, 0, tzinfo=timezone.utc)
    size = 2000 + len(README)  # top-level fields
    latest = canary = rc = None
    for version in version_sequence():
        if size >= target_bytes:
            break
        obj = version_object(rng, manifest, name, version, tarball_base)
        moment += timedelta(seconds=3600 + rng.below(86400), milliseconds=rng.below(1000))
        versions[version] = obj
        times[version] = iso(moment)
        size += len(json.dumps(obj, separators=(",", ":"))) + len(version) * 2 + 40
        if "-canary." in version:
            canary = version
        elif "-rc." in version:
            rc = version
        else:
            latest = version
    created = datetime(2016, 10, 25, 11, 0, 0, tzinfo=timezone.utc)
    doc = {
        "_id": name,
        "_rev": "4211-" + digest("rev", name, 16).hex(),
        "name": name,
        "dist-tags": {"latest": latest, "canary": canary, "rc": rc},
        "versions": versions,
        "time": {"created": iso(created), "modified": iso(moment), **times},
        "maintainers": [{"name": u, "email": e} for u, e in USERS],
        "description": "The synthetic framework of pmcache's packument benchmark",
        "homepage": "https://example.test/bench",
        "keywords": ["react", "framework", "ssr", "bench"],
        "repository": {"type": "git", "url": "git+https://git.example.test/bench/bench.git"},
        "bugs": {"url": "https://git.example.test/bench/bench/issues"},
        "license": "MIT",
        "readme": README.format(name=name),
        "readmeFilename": "readme.md",
        "_attachments": {},
    }
    return doc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="pmcache-bench-big", help="package name")
    parser.add_argument(
        "--tarball-base",
        required=True,
        help="upstream registry URL ending in '/': tarballs are <base><name>/-/<bare>-<v>.tgz",
    )
    parser.add_argument("--target-bytes", type=int, default=30_000_000)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--out", required=True, help="output file ('-' for stdout)")
    args = parser.parse_args()
    if not args.tarball_base.endswith("/"):
        parser.error("--tarball-base must end in '/'")

    doc = generate(args.name, args.tarball_base, args.target_bytes, args.seed)
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    if args.out == "-":
        sys.stdout.buffer.write(data)
    else:
        with open(args.out, "wb") as out:
            out.write(data)
    print(
        f"packument {args.name}: {len(doc['versions'])} versions, {len(data)} bytes",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
