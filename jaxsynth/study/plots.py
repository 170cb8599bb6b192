"""Figures of the study report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def roc_curves(arms: dict[str, dict], labels: np.ndarray, path: Path) -> None:
    """One ROC curve per arm from its seed-averaged test probabilities, AUC [CI] in the legend."""
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for arm, a in arms.items():
        fpr, tpr, _ = roc_curve(labels, np.asarray(a["mean_test_probs"]))
        m = a["metrics"]["roc_auc"]
        ax.plot(
            fpr, tpr, label=f"{arm}: AUC {m['mean']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"
        )
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate (tumour)",
        title="ROC on the real-only test split",
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def classifier_loss_curves(histories: dict[str, dict], path: Path) -> None:
    """Train and validation loss per epoch for every arm (paper 000, figures 1–2)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for arm, h in histories.items():
        a1.plot(np.arange(1, len(h["train_loss"]) + 1), h["train_loss"], label=arm)
        a2.plot(np.arange(1, len(h["val_loss"]) + 1), h["val_loss"], label=arm)
    a1.set(title="classifier training loss", xlabel="epoch", ylabel="weighted BCE")
    a2.set(title="classifier validation loss (real)", xlabel="epoch")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_matrices(
    arms: dict[str, dict], labels: np.ndarray, thresholds: dict[str, float], class_names, path: Path
) -> None:
    """Confusion matrix per arm (seed-averaged probabilities at the mean validation threshold)."""
    from sklearn.metrics import confusion_matrix

    n = len(arms)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (arm, a) in zip(axes.ravel(), arms.items()):
        pred = (np.asarray(a["mean_test_probs"]) >= thresholds[arm]).astype(int)
        cm = confusion_matrix(labels, pred, labels=[0, 1])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                color="white" if v > cm.max() / 2 else "black",
            )
        ax.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=class_names,
            yticklabels=class_names,
            xlabel="predicted",
            ylabel="true",
            title=arm,
        )
        ax.title.set_fontsize(8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ratio_sweep(curves: dict[str, dict], path: Path, metric_names=("f1", "roc_auc")) -> None:
    """Metric vs synthetic fraction of the minority class, one line per generator, CI bands."""
    fig, axes = plt.subplots(1, len(metric_names), figsize=(5.5 * len(metric_names), 4))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metric_names):
        for gen, pts in curves.items():
            xs = np.array(pts["fraction"])
            mean = np.array([p[m]["mean"] for p in pts["metrics"]])
            lo = np.array([p[m]["ci95"][0] for p in pts["metrics"]])
            hi = np.array([p[m]["ci95"][1] for p in pts["metrics"]])
            ax.plot(xs * 100, mean, marker="o", label=gen)
            ax.fill_between(xs * 100, lo, hi, alpha=0.2)
        ax.set(
            xlabel="synthetic share of tumour training images (%)",
            ylabel=m,
            title=f"{m} vs synthetic ratio (95% CI)",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
