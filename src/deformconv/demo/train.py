"""Training and evaluation of one demo model, with a text progress bar.

AdamW with a linear warm-up and a cosine decay to zero. The offset (and mask) convolutions of
the deformable layers are in their own parameter group (``offset_lr_scale`` times the base
rate), the knob that the DCN papers and mmcv expose. On this task a scale of 1 works best:
with 0.1 the offsets move too little in the epochs the demo can afford and the deformable model
keeps about half of its advantage (see the README's demo section for the measurements).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deformconv.nn import offset_param_groups


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings, the same for every model.

    Attributes:
        epochs: passes over the (freshly re-rendered) training pool.
        batch_size: images per step.
        lr: peak learning rate.
        offset_lr_scale: learning rate of the offset/mask convolutions relative to ``lr``.
        warmup_epochs: epochs of linear learning-rate warm-up before the cosine decay.
        weight_decay: decoupled weight decay (AdamW).
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    offset_lr_scale: float = 1.0
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-4


@dataclass
class History:
    """What happened during training, one entry per epoch.

    Attributes:
        loss: mean training loss.
        train_accuracy: accuracy on the training images of that epoch (while training).
        test_accuracy: accuracy on the in-range test set after the epoch.
        seconds: wall-clock time of training (evaluation excluded).
    """

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0


def schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


class ProgressBar:
    """One line per task that redraws itself on a terminal; on a pipe, only the final line of each task.

    Args:
        stream: where to write (stderr by default, so that stdout keeps only the results).
    """

    WIDTH = 24

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()

    def update(self, label: str, done: int, total: int, status: str) -> None:
        """Shows ``done`` out of ``total`` steps of the task ``label``, with a status text."""
        if self.interactive:
            self._draw(label, done, total, status, end="")

    def finish(self, label: str, status: str) -> None:
        """Ends the task ``label`` with a final status (its line stays on screen)."""
        if self.interactive:
            self._draw(label, 1, 1, status, end="\n")
        else:
            self.stream.write(f"{label} {status}\n")
            self.stream.flush()

    def _draw(self, label: str, done: int, total: int, status: str, end: str) -> None:
        filled = self.WIDTH * done // total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r{label} |{bar}| {100 * done // total:3d}% {status}\x1b[K{end}")
        self.stream.flush()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Fraction of ``images`` (Tensor[N, 1, H, W]) whose predicted class is ``labels`` (Tensor[N])."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(labels), batch_size):
        scores = model(images[start : start + batch_size].to(device))
        correct += int((scores.argmax(1).cpu() == labels[start : start + batch_size]).sum())
    return correct / len(labels)


def train(
    model: nn.Module,
    epoch_data: Callable[[int], tuple[Tensor, Tensor]],
    test_set: tuple[Tensor, Tensor],
    config: TrainConfig,
    label: str,
    progress: ProgressBar,
) -> History:
    """Trains ``model`` in place.

    Args:
        model: the network (on the device to train on).
        epoch_data: ``epoch -> (images Tensor[N, 1, H, W], labels Tensor[N])``, the training
            images of that epoch in the order to use them.
        test_set: (images, labels) measured after every epoch for the training curves.
        config: optimisation settings.
        label: name shown on the progress bar.
        progress: where to report progress.

    Returns:
        The per-epoch history.
    """
    device = next(model.parameters()).device
    groups = offset_param_groups(model, config.lr, config.offset_lr_scale, weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    images, labels = epoch_data(0)
    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    history = History()
    step = 0
    for epoch in range(config.epochs):
        if epoch > 0:
            images, labels = epoch_data(epoch)
        model.train()
        started = time.perf_counter()
        loss_sum = correct = 0.0
        for start in range(0, len(labels), config.batch_size):
            factor = schedule(step, total, warmup)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            x = images[start : start + config.batch_size].to(device)
            y = labels[start : start + config.batch_size].to(device)
            scores = model(x)
            loss = F.cross_entropy(scores, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += float((scores.argmax(1) == y).sum())
            step += 1
            done = epoch * steps_per_epoch + start // config.batch_size + 1
            progress.update(label, done, total, f"epoch {epoch + 1}/{config.epochs} loss {loss.item():.3f}")
        history.seconds += time.perf_counter() - started
        history.loss.append(loss_sum / len(labels))
        history.train_accuracy.append(correct / len(labels))
        history.test_accuracy.append(accuracy(model, *test_set))
    progress.finish(
        label, f"{history.seconds:.0f} s, loss {history.loss[-1]:.3f}, in-range test {history.test_accuracy[-1]:.1%}"
    )
    return history
