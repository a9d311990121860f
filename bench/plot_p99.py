#!/usr/bin/env python3
"""Plot p99 end-to-end latency against offered load, one line per target, from the CSV that
`herald bench compare --sweep ... --csv FILE` writes.

    python3 bench/plot_p99.py docs/bench/sweep.csv docs/bench/p99-vs-load.png

Needs matplotlib (`pip install matplotlib`). Runs whose deliveries were not all received are
drawn with a hollow marker: their p99 is of what arrived, so it understates the latency.
"""

import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ["herald", "herald-publish", "nats", "socketio", "mqtt", "redis"]


def main(src: str, dst: str) -> None:
    series = defaultdict(list)
    members = set()
    sizes = set()
    others = []
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            if not row["p99_ms"]:
                continue
            series[row["target"]].append(
                (
                    float(row["rate_offered"]),
                    float(row["p99_ms"]),
                    int(row["missing"]) > 0,
                )
            )
            members.add(row["members"])
            if row.get("other_cores"):
                others.append(float(row["other_cores"]))
            sizes.add(row["size"])
    if not series:
        sys.exit(f"{src}: no runs with latency figures")

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    targets = sorted(series, key=lambda t: (ORDER.index(t) if t in ORDER else len(ORDER), t))
    for target in targets:
        points = sorted(series[target])
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        (line,) = ax.plot(xs, ys, marker="o", label=target, linewidth=2 if target.startswith("herald") else 1.5)
        lossy = [p for p in points if p[2]]
        if lossy:
            ax.scatter(
                [p[0] for p in lossy],
                [p[1] for p in lossy],
                s=110,
                facecolors="none",
                edgecolors=line.get_color(),
                linewidths=1.5,
            )
    ax.set_yscale("log")
    ax.set_xlabel("offered load (messages/s published; deliveries/s = that x subscribers)")
    ax.set_ylabel("p99 end-to-end latency (ms, log scale)")
    ax.set_title(
        f"p99 latency vs offered load: {', '.join(sorted(members))} subscribers, "
        f"{', '.join(sorted(sizes))}-byte payloads, 1 publisher"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="target (hollow ring: some deliveries missing)", fontsize=9, title_fontsize=8)
    note = "server and load generator share one 2-core machine"
    if others:
        note += f"; other processes used {min(others):.1f}-{max(others):.1f} cores during the runs"
    fig.text(
        0.01,
        0.01,
        note,
        fontsize=8,
        alpha=0.7,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(dst)
    print(f"wrote {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_p99.py SWEEP.csv OUT.png")
    main(sys.argv[1], sys.argv[2])
