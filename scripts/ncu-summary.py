#!/usr/bin/env python3
"""Sums the per-kernel GPU times of an `ncu --csv --metrics gpu__time_duration.sum` log.

    ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
        heartstream codes ... > ncu.csv
    scripts/ncu-summary.py ncu.csv FRAMES

Prints, per kernel name, the launches and milliseconds per frame (total / FRAMES), largest
first, and the sum: the GPU time of a frame without launch gaps.
"""
import csv
import sys
from collections import defaultdict


def main(path, frames):
    total = defaultdict(float)
    count = defaultdict(int)
    with open(path, newline="") as f:
        rows = [line for line in f if line.startswith('"')]
    for row in csv.DictReader(rows):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = row["Metric Unit"]
        value = float(row["Metric Value"].replace(",", ""))
        scale = {"ns": 1e-6, "nsecond": 1e-6, "us": 1e-3, "usecond": 1e-3, "ms": 1.0, "msecond": 1.0, "s": 1e3, "second": 1e3}[unit]
        name = row["Kernel Name"].split("(")[0][:70]
        total[name] += value * scale
        count[name] += 1
    grand = sum(total.values())
    for name in sorted(total, key=total.get, reverse=True):
        print(f"{total[name] / frames:9.4f} ms/frame {count[name] / frames:7.1f} launches/frame  {name}")
    print(f"{grand / frames:9.4f} ms/frame in total over {sum(count.values()) / frames:.0f} launches/frame")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
