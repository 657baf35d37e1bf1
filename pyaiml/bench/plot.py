"""PNG bar chart of a bench report's ratios (matplotlib, Agg backend)."""
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
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    colors = ["tab:green" if x >= 1 else "tab:red" for x in ratios]
    ax.barh(range(len(rows)), ratios, color=colors)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up over peer (peer time / pyaiml time)")
    m = report["machine"]
    ax.set_title(f"pyaiml vs peers, {report['threads'].get('pyaiml')} threads, {m['cpu']}", fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
