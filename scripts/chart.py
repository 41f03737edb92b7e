#!/usr/bin/env python3
"""Draws the benchmark chart (SVG) from `tidings bench --json` summaries.

Usage: scripts/chart.py RESULTS_DIR [OUT.svg]   (default docs/img/bench.svg)

RESULTS_DIR holds files named SCENARIO-SERVER-ROUND.json, as scripts/bench.sh writes
them. Each scenario is one panel of horizontal bars, one bar per server: the bar is the
median over the rounds and the thin line spans the lowest to the highest round. Also
prints the figures as a Markdown table (for docs/BENCHMARKS.md). Standard library only.
"""

import json
import os
import statistics
import sys
from html import escape

# scenario: (title, unit, what to read, better)
SCENARIOS = [
    ("idle", "RSS per idle subscriber", "kB",
     lambda s: s["server"]["rss_per_subscriber_bytes"] / 1000, "lower"),
    ("fanout", "10k subscribers, 1 topic, 100/s asked: publishes/s", "/s",
     lambda s: s["publish"]["rate"], "higher"),
    ("fanout", "10k subscribers, 1 topic, 100/s: p99 publish→receive", "ms",
     lambda s: s["latency_ms"]["p99"], "lower"),
    ("throughput", "100 subscribers, 64 publisher connections: publishes/s", "/s",
     lambda s: s["publish"]["rate"], "higher"),
    ("throughput8", "100 subscribers, 8 publisher connections: publishes/s", "/s",
     lambda s: s["publish"]["rate"], "higher"),
    ("channels", "10k subscribers over 1,000 topics, 2,000/s: p99", "ms",
     lambda s: s["latency_ms"]["p99"], "lower"),
    ("resume", "resume 100,000 events of history", "s",
     lambda s: s["resume"]["seconds"], "lower"),
    ("latency", "1 subscriber, 10/s: p50 publish→receive", "ms",
     lambda s: s["latency_ms"]["p50"], "lower"),
]
SERVERS = ["durable", "nohistory", "baseline", "nchan"]
NAMES = {
    "durable": "Tidings durable",
    "nohistory": "Tidings --no-history",
    "baseline": "axum + broadcast baseline",
    "nchan": "nginx + nchan",
}
COLOURS = {"durable": "#2b6cb0", "nohistory": "#63b3ed", "baseline": "#718096", "nchan": "#dd6b20"}


def load(directory):
    """{(scenario, server): [summary, ...]} from the files of one sitting."""
    runs = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        parts = name[:-5].split("-")
        if len(parts) < 3:
            continue
        scenario, server = parts[0], parts[1]
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            runs.setdefault((scenario, server), []).append(json.load(f))
    return runs


def figures(runs):
    """[(title, unit, better, [(server, median, low, high, n)])] for each panel with data."""
    panels = []
    for scenario, title, unit, read, better in SCENARIOS:
        rows = []
        for server in SERVERS:
            values = []
            for summary in runs.get((scenario, server), []):
                try:
                    values.append(float(read(summary)))
                except (KeyError, TypeError):
                    pass
            if values:
                rows.append((server, statistics.median(values), min(values), max(values), len(values)))
        if rows:
            panels.append((title, unit, better, rows))
    return panels


def number(value):
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def svg(panels, load_range):
    width, left, right = 900, 200, 250
    bar, gap, head = 18, 5, 34
    y = 50
    parts = []
    for title, unit, better, rows in panels:
        top = max(high for _, _, _, high, _ in rows) or 1
        scale = (width - left - right) / top
        parts.append(f'<text x="10" y="{y + 16}" class="t">{escape(title)} '
                     f'<tspan class="n">({escape(unit)}, {better} is better)</tspan></text>')
        y += head - 8
        for server, median, low, high, n in rows:
            w = max(median * scale, 1)
            parts.append(f'<text x="{left - 8}" y="{y + 13}" class="l">{escape(NAMES[server])}</text>')
            parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{COLOURS[server]}"/>')
            if n > 1 and high > low:
                parts.append(f'<line x1="{left + low * scale:.1f}" x2="{left + high * scale:.1f}" '
                             f'y1="{y + bar / 2}" y2="{y + bar / 2}" stroke="#1a202c" stroke-width="1.5"/>')
            span = f" ({number(low)}–{number(high)})" if n > 1 and high > low else ""
            parts.append(f'<text x="{left + max(w, high * scale) + 6:.1f}" y="{y + 13}" class="v">'
                         f'{number(median)} {escape(unit)}{escape(span)}</text>')
            y += bar + gap
        y += 14
    height = y + 30
    title = "tidings bench: four servers, one sitting, medians of the rounds (line: lowest to highest)"
    note = f"2 cores shared with the load generator and other builds; load average {load_range}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">\n'
            '<style>.t{font-size:14px;font-weight:bold;fill:#1a202c}.n{font-weight:normal;fill:#4a5568}'
            '.l{font-size:12px;text-anchor:end;fill:#2d3748}.v{font-size:12px;fill:#2d3748}'
            '.h{font-size:16px;font-weight:bold}.s{font-size:12px;fill:#4a5568}</style>\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n'
            f'<text x="10" y="22" class="h">{escape(title)}</text>\n'
            f'<text x="10" y="40" class="s">{escape(note)}</text>\n'
            + "\n".join(parts) + "\n</svg>\n")


def markdown(panels):
    lines = ["| scenario | " + " | ".join(NAMES[s] for s in SERVERS) + " |",
             "|---|" + "---:|" * len(SERVERS)]
    for title, unit, _, rows in panels:
        by_server = {server: (median, low, high, n) for server, median, low, high, n in rows}
        cells = []
        for server in SERVERS:
            if server not in by_server:
                cells.append("—")
                continue
            median, low, high, n = by_server[server]
            cells.append(f"{number(low)}–{number(high)} {unit}" if n > 1 and high > low
                         else f"{number(median)} {unit}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/img/bench.svg"
    runs = load(directory)
    panels = figures(runs)
    if not panels:
        sys.exit(f"no results in {directory}")
    loads = [s["load_average_start"][0] for summaries in runs.values() for s in summaries]
    load_range = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "unknown"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(svg(panels, load_range))
    print(markdown(panels))
    print(f"\n(load average at the runs' start: {load_range}; chart written to {out})")


if __name__ == "__main__":
    main()
