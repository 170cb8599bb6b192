"""Forest plot of Δ(arm − reference) with hierarchical 95 % intervals, one row per arm.

The figure a reader checks first: is each arm's interval clear of the zero line, and does a
generator's interval sit to the right of its classical-augmentation control's?
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxsynth.study.verdicts import LABELS  # noqa: E402

COLOURS = {"better": "tab:green", "worse": "tab:red", "no evidence": "tab:gray"}


def forest_plot(
    arms: dict[str, dict],
    path: Path,
    metrics=("f1", "pr_auc", "roc_auc"),
    reference: str = "original",
) -> list[str]:
    """Δ vs `reference` per arm and metric (point, 95 % interval, coloured by verdict); returns
    the arms drawn, top to bottom."""
    rows = [a for a, v in arms.items() if reference in v["vs"]]
    fig, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(4.2 * len(metrics), 0.9 + 0.38 * max(len(rows), 1)),
        sharey=True,
        squeeze=False,
    )
    for ax, m in zip(axes[0], metrics):
        for y, arm in enumerate(rows):
            d = arms[arm]["vs"][reference][m]
            c = COLOURS[d["verdict"]]
            ax.plot(d["ci95"], [y, y], color=c, lw=2)
            ax.plot([d["mean"]], [y], "o", color=c)
        ax.axvline(0.0, color="k", lw=0.8, ls=":")
        ax.set_title(f"Δ{LABELS[m]} vs {reference}", fontsize=9)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
    axes[0, 0].invert_yaxis()  # once: the y axis is shared
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return rows
