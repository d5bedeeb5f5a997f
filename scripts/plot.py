#!/usr/bin/env python3
"""Plots and tables from the JSON files `scripts/bench-peers.sh` writes.

    python3 scripts/plot.py bench-results/ [--out docs/plots]

Reads `fanout-<system>-<subscribers>.json` and `patterns-<system>-<patterns>.json` (written by
`invalidator-load bench-fanout|bench-patterns --json`), draws SVGs into --out (default
docs/plots next to this script's repository), and writes the Markdown tables to
`<results>/tables.md` (also printed).
"""

import argparse
import glob
import json
import os
import sys

SYSTEMS = ["invalidator", "redis", "nats", "nats-ws"]
LABELS = {
    "invalidator": "invalidator (WebSocket)",
    "redis": "Redis pub/sub",
    "nats": "nats-server (TCP)",
    "nats-ws": "nats-server (WebSocket)",
}
STYLE = {
    "invalidator": dict(color="#d62728", marker="o"),
    "redis": dict(color="#1f77b4", marker="s"),
    "nats": dict(color="#2ca02c", marker="^"),
    "nats-ws": dict(color="#9467bd", marker="v"),
}


def load(results, scenario, size_key):
    """{system: {size: record}} for one scenario."""
    out = {}
    for path in sorted(glob.glob(os.path.join(results, f"{scenario}-*.json"))):
        with open(path) as f:
            r = json.load(f)
        out.setdefault(r["system"], {})[r[size_key]] = r
    return out


def lat(r, phase, which, q):
    return r[phase][which][q]


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def ratio(a, b):
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def plot_lines(ax, data, phase, metric, sizes_label, ylabel, quantiles=("p50", "p99")):
    for system in SYSTEMS:
        if system not in data:
            continue
        sizes = sorted(data[system])
        for q in quantiles:
            ys = [data[system][s][phase][metric][q] / 1000.0 for s in sizes]
            ax.plot(
                sizes,
                ys,
                linestyle="-" if q == "p50" else "--",
                label=f"{LABELS[system]} {q}",
                **STYLE[system],
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(sizes_label)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def plot_values(ax, data, get, sizes_label, ylabel):
    for system in SYSTEMS:
        if system not in data:
            continue
        sizes = sorted(data[system])
        ys = [get(data[system][s]) or 0 for s in sizes]
        ax.plot(sizes, ys, label=LABELS[system], **STYLE[system])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(sizes_label)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def tables(fan, pat):
    lines = []
    if fan:
        lines += [
            "### Fan-out: latency phase (100 publishes/s, 1 publisher)",
            "",
            "| system | subscribers | last receiver p50 µs | p99 µs | per delivery p50 µs | p99 µs | deliveries |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for n in sorted({n for d in fan.values() for n in d}):
            for s in SYSTEMS:
                r = fan.get(s, {}).get(n)
                if not r:
                    continue
                p = r["latency_phase"]
                lines.append(
                    f"| {s} | {n:,} | {fmt(p['latency_last_us']['p50'])} | {fmt(p['latency_last_us']['p99'])} "
                    f"| {fmt(p['latency_delivery_us']['p50'])} | {fmt(p['latency_delivery_us']['p99'])} "
                    f"| {p['deliveries']:,}/{p['expected']:,} |"
                )
        lines += [
            "",
            "### Fan-out: max rate (4 closed-loop publishers)",
            "",
            "| system | subscribers | deliveries/s | server CPU s | deliveries per server CPU-s | generator CPU s "
            "| last receiver p50 µs | p99 µs | complete events |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n in sorted({n for d in fan.values() for n in d}):
            for s in SYSTEMS:
                r = fan.get(s, {}).get(n)
                if not r:
                    continue
                p = r["max_rate_phase"]
                lines.append(
                    f"| {s} | {n:,} | {fmt(p['deliveries_per_second'])} | {fmt(p['server_cpu_seconds'], 2)} "
                    f"| {fmt(p['deliveries_per_server_cpu_second'])} | {fmt(p['generator_cpu_seconds'], 2)} "
                    f"| {fmt(p['latency_last_us']['p50'])} | {fmt(p['latency_last_us']['p99'])} "
                    f"| {p['complete_events']:,}/{p['events']:,} |"
                )
    if pat:
        lines += [
            "",
            "### Patterns: latency phase (500 publishes/s, 1 publisher, 1,000 subscribers)",
            "",
            "| system | patterns | p50 µs | p90 µs | p99 µs | deliveries |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m in sorted({m for d in pat.values() for m in d}):
            for s in SYSTEMS:
                r = pat.get(s, {}).get(m)
                if not r:
                    continue
                p = r["latency_phase"]
                h = p["latency_last_us"]
                lines.append(
                    f"| {s} | {m:,} | {fmt(h['p50'])} | {fmt(h['p90'])} | {fmt(h['p99'])} "
                    f"| {p['deliveries']:,}/{p['expected']:,} |"
                )
        lines += [
            "",
            "### Patterns: max rate (4 closed-loop publishers, 1,000 subscribers)",
            "",
            "| system | patterns | publishes/s | server CPU s | publishes per server CPU-s | generator CPU s | p50 µs | p99 µs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in sorted({m for d in pat.values() for m in d}):
            for s in SYSTEMS:
                r = pat.get(s, {}).get(m)
                if not r:
                    continue
                p = r["max_rate_phase"]
                lines.append(
                    f"| {s} | {m:,} | {fmt(p['publishes_per_second'])} | {fmt(p['server_cpu_seconds'], 2)} "
                    f"| {fmt(p['publishes_per_server_cpu_second'])} | {fmt(p['generator_cpu_seconds'], 2)} "
                    f"| {fmt(p['latency_last_us']['p50'])} | {fmt(p['latency_last_us']['p99'])} |"
                )
    lines += ["", "### Ratios (invalidator / peer; > 1 is better for us except latency, where < 1 is)", ""]
    lines += ["| figure | vs redis | vs nats | vs nats-ws |", "|---|---:|---:|---:|"]
    ours_f = fan.get("invalidator", {})
    for n in sorted(ours_f):
        o = ours_f[n]
        peers = [fan.get(s, {}).get(n) for s in ("redis", "nats", "nats-ws")]
        row = lambda get: " | ".join(ratio(get(o), get(p)) if p else "-" for p in peers)  # noqa: E731
        lines.append(
            f"| fan-out {n:,}: latency-phase p99 (last receiver) | "
            + row(lambda r: r["latency_phase"]["latency_last_us"]["p99"])
            + " |"
        )
        lines.append(
            f"| fan-out {n:,}: deliveries per server CPU-s | "
            + row(lambda r: r["max_rate_phase"]["deliveries_per_server_cpu_second"])
            + " |"
        )
        lines.append(
            f"| fan-out {n:,}: deliveries/s (wall clock) | "
            + row(lambda r: r["max_rate_phase"]["deliveries_per_second"])
            + " |"
        )
    ours_p = pat.get("invalidator", {})
    for m in sorted(ours_p):
        o = ours_p[m]
        peers = [pat.get(s, {}).get(m) for s in ("redis", "nats", "nats-ws")]
        row = lambda get: " | ".join(ratio(get(o), get(p)) if p else "-" for p in peers)  # noqa: E731
        lines.append(
            f"| patterns {m:,}: publishes/s (wall clock) | "
            + row(lambda r: r["max_rate_phase"]["publishes_per_second"])
            + " |"
        )
        lines.append(
            f"| patterns {m:,}: publishes per server CPU-s | "
            + row(lambda r: r["max_rate_phase"]["publishes_per_server_cpu_second"])
            + " |"
        )
        lines.append(
            f"| patterns {m:,}: latency-phase p99 | "
            + row(lambda r: r["latency_phase"]["latency_last_us"]["p99"])
            + " |"
        )
    return "\n".join(lines) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default=os.path.join(here, "..", "bench-results"))
    ap.add_argument("--out", default=os.path.join(here, "..", "docs", "plots"))
    ap.add_argument("--format", default="svg", choices=["svg", "png"])
    a = ap.parse_args()

    fan = load(a.results, "fanout", "subscribers")
    pat = load(a.results, "patterns", "patterns")
    if not fan and not pat:
        sys.exit(f"no fanout-*.json or patterns-*.json in {a.results}")
    md = tables(fan, pat)
    with open(os.path.join(a.results, "tables.md"), "w") as f:
        f.write(md)
    print(md)

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("matplotlib is missing: python3 -m pip install matplotlib")
    plt.rcParams["svg.hashsalt"] = "invalidator-bench"  # stable ids: re-plots diff cleanly
    plt.rcParams["svg.fonttype"] = "none"
    os.makedirs(a.out, exist_ok=True)

    if fan:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        plot_lines(axes[0], fan, "latency_phase", "latency_last_us", "subscribers",
                   "ms, publish → last subscriber (100 publishes/s)")
        axes[0].set_title("Fan-out latency (fixed rate)")
        plot_lines(axes[1], fan, "max_rate_phase", "latency_last_us", "subscribers",
                   "ms, publish → last subscriber (max rate)")
        axes[1].set_title("Fan-out latency at max rate")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, f"fanout-latency.{a.format}"), metadata={"Date": None})
        plt.close(fig)

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        plot_values(axes[0], fan, lambda r: r["max_rate_phase"]["deliveries_per_second"], "subscribers",
                    "deliveries/s (wall clock, shared 2 cores)")
        axes[0].set_title("Fan-out throughput")
        plot_values(axes[1], fan, lambda r: r["max_rate_phase"]["deliveries_per_server_cpu_second"],
                    "subscribers", "deliveries per server CPU-second")
        axes[1].set_title("Fan-out efficiency")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, f"fanout-throughput.{a.format}"), metadata={"Date": None})
        plt.close(fig)

    if pat:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        plot_lines(axes[0], pat, "latency_phase", "latency_last_us", "distinct prefix patterns",
                   "ms, publish → subscriber (500 publishes/s)")
        axes[0].set_title("Pattern routing latency (1,000 subscribers)")
        plot_values(axes[1], pat, lambda r: r["max_rate_phase"]["publishes_per_second"],
                    "distinct prefix patterns", "publishes/s (4 closed-loop publishers)")
        axes[1].set_title("Pattern routing: publish rate")
        axes[0].legend(fontsize=7)
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, f"patterns.{a.format}"), metadata={"Date": None})
        plt.close(fig)
    print(f"plots written to {os.path.normpath(a.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
