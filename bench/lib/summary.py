#!/usr/bin/env python3
"""Summarise bench/run.sh's measurements (its raw TSV) as tables: medians over rounds.

    bench/lib/summary.py RAW_TSV [--markdown]

The raw file has no header; its columns are run.sh's RAW_HEADER. BENCH_NA in the environment
lists rows that could not run, as `row system=why;` items.
"""

import argparse
import os
import statistics
import sys

COLUMNS = ["scenario", "system", "round", "req_per_s", "p50_ms", "p99_ms", "cpu_ms_per_req",
           "errors", "body_bytes", "busy_pct", "seconds", "peak_rss_mib", "upstream_requests"]
WARM = ["small-file", "wheel-2mb", "pypi-json", "pypi-html", "tarball-1mb", "packument-10mb",
        "packument-gzip"]
SYSTEMS = ["pmcache", "nginx", "devpi", "proxpi", "verdaccio"]


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def median(rows, column):
    values = [v for v in (number(r[column]) for r in rows) if v is not None]
    return statistics.median(values) if values else None


def most(rows, column):
    values = [v for v in (number(r[column]) for r in rows) if v is not None]
    return max(values) if values else None


def fmt(value, digits=1):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"


def print_table(title, header, lines, markdown):
    if not lines:
        return
    print()
    print(f"### {title}" if markdown else title)
    print()
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    for line in [header] + lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = []
    with open(args.raw) as raw:
        for line in raw:
            fields = line.rstrip("\n").split("\t")
            rows.append(dict(zip(COLUMNS, fields + [""] * (len(COLUMNS) - len(fields)))))
    na = {}
    for item in os.environ.get("BENCH_NA", "").split(";"):
        if "=" in item:
            key, why = item.split("=", 1)
            na[key] = why

    def select(scenario, system):
        return [r for r in rows if r["scenario"] == scenario and r["system"] == system]

    warm = []
    for row in WARM:
        nginx = select(row, "nginx")
        nginx_rps, nginx_p99 = median(nginx, "req_per_s"), median(nginx, "p99_ms")
        for system in SYSTEMS:
            runs = select(row, system)
            if not runs:
                if f"{row} {system}" in na:
                    warm.append([row, system, "", f"n/a ({na[f'{row} {system}']})"] + [""] * 7)
                continue
            # wrk counts only answers completed within its run: a run with none has no figure
            # (its latencies read 0), so it is left out, and the system's name says so.
            answered = [r for r in runs if number(r["req_per_s"])]
            if not answered:
                warm.append([row, system, fmt(median(runs, "body_bytes"), 0),
                             "n/a (no answer completed within any run)"] + [""] * 7)
                continue
            label = system
            if len(answered) < len(runs):
                label = f"{system} ({len(runs) - len(answered)} of {len(runs)} runs: no answer)"
            runs = answered
            rps = median(runs, "req_per_s")
            p99 = median(runs, "p99_ms")
            warm.append([
                row, label, fmt(median(runs, "body_bytes"), 0), fmt(rps), fmt(median(runs, "p50_ms"), 2),
                fmt(p99, 2), fmt(median(runs, "cpu_ms_per_req"), 3),
                fmt(sum(number(r["errors"]) or 0 for r in runs), 0), fmt(most(runs, "busy_pct"), 0),
                ratio(rps, nginx_rps), ratio(p99, nginx_p99),
            ])
    print_table("Warm, same bytes (wrk; medians over rounds)",
                ["row", "system", "body bytes", "req/s", "p50 ms", "p99 ms", "CPU ms/req",
                 "errors", "max busy%", "req/s / nginx", "p99 / nginx"], warm, args.markdown)

    cold = []
    up, through = select("cold-packument", "upstream"), select("cold-packument", "pmcache")
    if up and through:
        u, t = median(up, "seconds"), median(through, "seconds")
        cold.append([fmt(u, 3), fmt(t, 3), ratio(t, u), fmt(most(through, "peak_rss_mib"), 0),
                     str(len(through)), fmt(most(up + through, "busy_pct"), 0)])
    print_table("Cold packument: first GET through a cold pmcache vs the plain upstream GET",
                ["upstream s", "through pmcache s", "ratio", "pmcache peak RSS MiB", "runs",
                 "max busy%"], cold, args.markdown)

    concurrent = []
    for scenario in ["downloads-200", "misses-200"]:
        for system in SYSTEMS:
            runs = select(scenario, system)
            if not runs:
                continue
            concurrent.append([
                scenario, system, fmt(median(runs, "seconds"), 2), fmt(median(runs, "p50_ms"), 0),
                fmt(median(runs, "p99_ms"), 0), fmt(most(runs, "peak_rss_mib"), 0),
                fmt(most(runs, "upstream_requests"), 0),
                fmt(sum(number(r["errors"]) or 0 for r in runs), 0), str(len(runs)),
                fmt(most(runs, "busy_pct"), 0),
            ])
    print_table("Concurrent downloads of one 20 MB file (median wall time; highest peak RSS)",
                ["scenario", "system", "wall s", "p50 ms", "p99 ms", "peak RSS MiB",
                 "upstream GETs (max)", "errors", "runs", "max busy%"], concurrent, args.markdown)

    startup = []
    for system in ["pmcache-explicit", "pmcache-auto"]:
        runs = select("startup", system)
        if runs:
            startup.append([system.replace("pmcache-", ""), fmt(median(runs, "p50_ms"), 1),
                            fmt(most(runs, "busy_pct"), 0)])
    print_table("Start-up: exec to the first 200 from /healthz (median of the runs)",
                ["upstreams", "ms", "busy%"], startup, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
