"""Matplotlib (Agg) helpers shared by the figure commands: atomic PNG output, bands, violins,
image grids."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gradtune_jax.io import atomic_open  # noqa: E402

DPI = 100


def subplots(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.6)):
    """`(fig, axes)` with one `size` per panel; `axes` is always a flat list."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, list(axes.flat)


def save(fig, path: str) -> None:
    """Write `fig` as a PNG atomically and close it (multi-process job: process 0 writes)."""
    import jax

    if jax.process_index() != 0:
        plt.close(fig)
        return
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    plt.close(fig)


def band(ax, x: Sequence[float], runs_RX: np.ndarray, label: str, marker: str = "o", color=None) -> None:
    """Mean over runs (rows) with a ± std band (population std)."""
    runs = np.asarray(runs_RX, np.float64)
    mu, sd = runs.mean(0), runs.std(0)
    (line,) = ax.plot(x, mu, marker=marker, label=label, color=color)
    ax.fill_between(x, mu - sd, mu + sd, alpha=0.2, color=line.get_color())


def violins(ax, values: Sequence[np.ndarray], labels: Sequence[str], log: bool = True) -> None:
    """One violin per label (empty groups are skipped); log10 y-axis when `log`."""
    keep = [i for i, v in enumerate(values) if len(v) > 1]
    data = [np.log10(np.maximum(values[i], 1e-12)) if log else values[i] for i in keep]
    if data:
        ax.violinplot(data, positions=[i + 1 for i in keep], showmedians=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right", fontsize=8)


def _display(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = float(img.min()), float(img.max())
    if lo >= -0.1 and hi <= 1.1:  # already [0, 1] pixels: keep the colours
        return np.clip(img, 0.0, 1.0)
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def image_grid(rows: Sequence[tuple[str, np.ndarray, Sequence[str]]], path: str, title: str,
               cell: float = 0.9) -> None:
    """A grid with one row per `(row label, images (n, H, W[, C]), per-image captions)`; images
    outside [0, 1] are min-max scaled for display."""
    ncols = max(1, max(len(imgs) for _, imgs, _ in rows))
    fig, axes = plt.subplots(len(rows), ncols, figsize=(cell * ncols + 1.6, cell * len(rows) + 0.6), squeeze=False)
    for r, (label, imgs, captions) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(imgs):
                ax.imshow(_display(imgs[c]), cmap="gray", interpolation="nearest")
                ax.set_title(captions[c], fontsize=6, pad=2)
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    save(fig, path)
