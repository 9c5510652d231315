"""Quality against sampling steps: one line per method (variant, weights), x = steps, the 95 % interval as a
band (matplotlib).  Set-level metrics have no interval: their line has no band."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from srbench.leaderboard import Table
from srbench.metrics import set_level


def plot_quality_vs_steps(
    board: pd.DataFrame,
    table: Table,
    metrics: Sequence[str],
    lower_better: Mapping[str, bool],
    path: Path,
) -> Path | None:
    """One PNG for ``table``: a panel per metric; None when no method was run at two or more step counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = board[(board["status"] == "done") & (board["table"] == table.id)]
    lines = {
        key: g.sort_values("steps")
        for key, g in done.groupby(["method", "weights"], sort=True)
        if g["steps"].nunique() >= 2
    }
    panels = [m for m in metrics if any(g[m].notna().sum() >= 2 for g in lines.values())]
    if not lines or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, m in zip(axes[0], panels, strict=True):
        for (method, weights), g in lines.items():
            g = g.dropna(subset=[m])
            x = g["steps"].to_numpy(np.float64)
            y = g[m].to_numpy(np.float64)
            label = method + ("" if weights == "real" else f" ({weights})")
            (line,) = ax.plot(
                x, y, marker="o", ms=4, lw=1.4, label=label, ls="-" if weights == "real" else ":"
            )
            ci = pd.to_numeric(g[f"{m}_ci95"], errors="coerce").to_numpy(np.float64)
            if not set_level(m) and np.isfinite(ci).any():
                ci = np.nan_to_num(ci)
                ax.fill_between(x, y - ci, y + ci, color=line.get_color(), alpha=0.18, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(done["steps"].dropna().astype(int))))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("sampling steps (log)")
        ax.set_ylabel(f"{m} {'↓' if lower_better[m] else '↑'}" + (" (set-level)" if set_level(m) else ""))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(table.title.replace("`", "") + " — mean, 95 % CI band", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
