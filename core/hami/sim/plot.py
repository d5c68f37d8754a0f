"""``--plot``: allocated % against arrived % per policy (matplotlib, an optional dependency)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hami.sim.runner import PolicySummary


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the file backend; the CLI calls this before a run, so a missing
    optional dependency is reported at once, not after minutes of simulation."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(f"--plot needs matplotlib, which is not installed ({exc}): pip install 'hami[sim]'") from None
    return plt


def plot_curves(summaries: Sequence[PolicySummary], path: str | os.PathLike[str], title: str = "") -> None:
    plt = require_matplotlib()
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
