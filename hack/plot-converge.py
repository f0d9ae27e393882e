#!/usr/bin/env python3
"""Plots converge time against the number of Applications from the CSV benches/converge.rs writes.

    hack/plot-converge.py target/converge.csv docs/converge.png
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    runs = defaultdict(lambda: defaultdict(list))
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            n = int(row["apps"])
            for column in ("plain_ready_s", "operator_running_s",
                           "plain_apiserver_cpu_s", "operator_apiserver_cpu_s"):
                runs[column][n].append(float(row[column]))
    sizes = sorted(runs["operator_running_s"])
    fig, (wall, cpu) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, (ours, plain, label) in (
        (wall, ("operator_running_s", "plain_ready_s", "seconds until every workload is ready")),
        (cpu, ("operator_apiserver_cpu_s", "plain_apiserver_cpu_s", "kube-apiserver CPU seconds")),
    ):
        for column, name, style in ((ours, "oam-trust (all-or-nothing, status, revisions)", "o-"),
                                    (plain, "plain server-side-apply loop", "s--")):
            mean = [sum(runs[column][n]) / len(runs[column][n]) for n in sizes]
            ax.plot(sizes, mean, style, label=name)
            for n in sizes:
                ax.plot([n] * len(runs[column][n]), runs[column][n], "k.", markersize=3)
        ax.set_xlabel("Applications (webservice + expose + scaler)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    wall.legend(loc="upper left", fontsize=8)
    fig.suptitle("Converging N Applications on the local control plane (cargo bench --bench converge)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(dst)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
