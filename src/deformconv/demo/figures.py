"""The demo's figures (PNG, matplotlib with the non-interactive Agg backend).

- :func:`plot_sampling`: the learned sampling points of one output unit through the stacked
  deformable layers, over the test image, next to the regular grid a plain network uses
  (Figure 5 of the DCNv1 paper).
- :func:`plot_curves`: training loss and in-range test accuracy per epoch, mean over seeds with
  the range between the best and the worst seed shaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from deformconv.demo.sampling import SamplingExample

COLORS = {"plain": "tab:blue", "wide plain": "tab:green", "deformable": "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _to_pixels(points: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Grid coordinates (Tensor[P, 2], y then x) -> pixel centres (x, y) for ``imshow``.

    Grid cell ``g`` of a stride-``s`` convolution with padding ``(k-1)/2`` is centred on input
    pixel ``s*g``.
    """
    return points[:, 1] * stride, points[:, 0] * stride


def plot_sampling(examples: Sequence[SamplingExample], path: Path) -> None:
    """Draws each example twice: the regular grid (top row) and the learned points (bottom row).

    Args:
        examples: the images and their traced sampling points.
        path: where to write the PNG.
    """
    plt = _pyplot()
    columns = len(examples)
    fig, axes = plt.subplots(2, columns, figsize=(2.6 * columns, 5.6), squeeze=False)
    for column, example in enumerate(examples):
        size = example.image.shape[-1]
        tree = example.tree
        unit_x, unit_y = _to_pixels(torch.tensor([tree.unit], dtype=torch.float32), example.stride)
        rows = (
            ("regular grid (plain)", tree.regular, torch.ones(len(tree.regular)), COLORS["plain"]),
            ("learned (deformable)", tree.points, tree.weights, COLORS["deformable"]),
        )
        for row, (name, points, weights, color) in enumerate(rows):
            ax = axes[row][column]
            extent = (-0.5, size - 0.5, size - 0.5, -0.5)
            ax.imshow(example.image.numpy(), cmap="gray", vmin=0, vmax=1, extent=extent)
            x, y = _to_pixels(points, example.stride)
            # Opacity follows the DCNv2 mask (product along the path): faint points barely count.
            alpha = (weights / weights.max().clamp(min=1e-6)).clamp(0.1, 1)
            ax.scatter(x.numpy(), y.numpy(), s=9, c=color, alpha=alpha.numpy(), linewidths=0)
            ax.scatter(unit_x.numpy(), unit_y.numpy(), s=60, c="lime", edgecolors="black", linewidths=0.8)
            ax.set_xlim(-0.5, size - 0.5)
            ax.set_ylim(size - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name)
            if row == 0:
                ax.set_title(example.title, fontsize=9)
    fig.suptitle("Sampling points of one output unit (green) through the stacked deformable layers", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(histories: dict[str, list[dict[str, list[float]]]], path: Path) -> None:
    """Training loss and in-range test accuracy per epoch for each model, over seeds.

    Args:
        histories: ``{model: [per-seed {"loss": [...], "test_accuracy": [...]}]}``.
        path: where to write the PNG.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for model, runs in histories.items():
        color = COLORS.get(model)
        for ax, key in ((loss_ax, "loss"), (acc_ax, "test_accuracy")):
            values = torch.tensor([run[key] for run in runs])
            epochs = list(range(1, values.shape[1] + 1))
            mean, low, high = values.mean(0).tolist(), values.min(0).values.tolist(), values.max(0).values.tolist()
            ax.plot(epochs, mean, color=color, label=f"{model} (mean of {len(runs)} seeds)")
            ax.fill_between(epochs, low, high, color=color, alpha=0.2)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Test accuracy, in the training range")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
