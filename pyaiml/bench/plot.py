"""PNG bar chart of a bench report's ratios (matplotlib, Agg backend), log scale around 1x.

Test: tests/test_demo.py::test_bench_writes_json_and_png.
"""
from __future__ import annotations

import os


def plot_ratios(report: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("pyaiml bench --plot needs matplotlib: pip install matplotlib") from e
    rows = [r for r in report["rows"] if "ratio" in r]
    labels = [f"{r['suite']}: {r['case']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.6))
    colors = ["tab:green" if x >= 1 else "tab:red" for x in ratios]
    # Bars grow from 1x on a log axis, so 10x faster and 10x slower are the same length
    # (on a linear axis a 150x row flattened every 0.5-3x row to a sliver).
    ax.barh(range(len(rows)), [x - 1.0 for x in ratios], left=1.0, color=colors)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=1)
    for i, x in enumerate(ratios):
        ax.annotate(f"{x:.2f}x", (x, i), xytext=(3 if x >= 1 else -3, 0), textcoords="offset points",
                    ha="left" if x >= 1 else "right", va="center", fontsize=7)
    if ratios:
        lo, hi = min(ratios + [1.0]), max(ratios + [1.0])
        ax.set_xlim(lo / 2.5, hi * 2.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top, no empty margins
    ax.set_xlabel("peer time / pyaiml time (log scale; > 1: pyaiml faster)")
    m = report["machine"]
    quick = " (quick run: not comparable with a full run's ratios)" if report.get("quick") else ""
    ax.set_title(f"pyaiml vs peers, {report['threads'].get('pyaiml')} threads{quick}"
                 f"\n{m['cpu']}, {m['cores']} cores, {m['date']}", fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
