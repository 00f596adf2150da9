#!/usr/bin/env python3
"""Per (kernel, grid, block) launch times of an `ncu --csv --metrics gpu__time_duration.sum`
log: tells apart the same kernel at different shapes (e.g. each matrix product of a layer).

    scripts/ncu-shapes.py ncu.csv [TOP]
"""
import csv
import sys
from collections import defaultdict

SCALE = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}


def main(path, top):
    times = defaultdict(list)
    with open(path, newline="") as f:
        rows = [line for line in f if line.startswith('"')]
    for row in csv.DictReader(rows):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        us = float(row["Metric Value"].replace(",", "")) * SCALE[row["Metric Unit"]]
        key = (row["Kernel Name"].split("(")[0][:32], row["Grid Size"], row["Block Size"])
        times[key].append(us)
    ranked = sorted(times.items(), key=lambda kv: -sum(kv[1]))[:top]
    for (name, grid, block), us in ranked:
        print(f"{name:32s} grid {grid:>14s} block {block:>12s} n={len(us):5d} "
              f"mean {sum(us) / len(us):8.2f} us  min {min(us):8.2f} us")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30)
