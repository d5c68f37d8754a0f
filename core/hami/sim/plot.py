"""``--plot``: allocated % against arrived % per policy (matplotlib, an optional dependency)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from hami.sim.runner import PolicySummary


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def plot_curves(summaries: Sequence[PolicySummary], path: str | os.PathLike[str], title: str = "") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib, which is not installed: pip install matplotlib") from None
    figure, axes = plt.subplots(figsize=(7, 4.5))
    arrived = list(range(len(summaries[0].curve))) if summaries else []
    for summary in summaries:
        axes.plot(arrived, summary.curve, label=f"{summary.policy} ({summary.alloc100_mean:.2f} % at 100 %)")
    axes.plot(arrived, arrived, color="grey", linewidth=0.8, linestyle=":", label="arrived")
    axes.set_xlabel("arrived workload (% of cluster GPU capacity)")
    axes.set_ylabel("allocated (% of cluster GPU capacity)")
    axes.set_xlim(0, max(arrived, default=130))
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
