"""The demo's experiment: a plain and a deformable network trained side by side, over seeds.

Both networks see the same images in the same order, start from the same weights (the
deformable one's offset convolutions at zero) and use the same optimiser, schedule and epochs;
the only difference is that the last body convolutions of one of them deform. Because the
offset convolutions add parameters, a third network is trained as a control: the plain
architecture made wider until it has at least as many parameters as the deformable one.

Training draws digits from a restricted range of sizes and rotations; testing uses held-out
digits inside that range and outside it (larger, smaller, more rotated).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from deformconv.demo.data import Digits, Geometry, load_source_digits, make_test_sets, training_epoch
from deformconv.demo.model import BODY_DEPTH, BODY_STRIDE, DigitNet, count_parameters, make_deformable
from deformconv.demo.sampling import mean_spread
from deformconv.demo.train import ProgressBar, TrainConfig, accuracy, train

TRAIN_GEOMETRY = Geometry(size=(9, 13), angle=(0, 15))
TEST_CONDITIONS = {
    "in range": TRAIN_GEOMETRY,
    "larger": Geometry(size=(15, 19), angle=(0, 15)),
    "smaller": Geometry(size=(6, 8), angle=(0, 15)),
    "rotated": Geometry(size=(9, 13), angle=(30, 45)),
}
# The models, in the order they train and are shown; "wide plain" is the parameter-matched control.
MODELS = ("plain", "wide plain", "deformable")
# In-range test images evaluated after every epoch for the training curves: evaluating the whole
# set every epoch would cost a sizeable share of the run on a laptop CPU.
CURVE_IMAGES = 512


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run of the demo.

    Attributes:
        seeds: the training seeds (one model of each kind per seed).
        train: optimiser settings, shared by all models.
        canvas: side of the images in pixels.
        width: channels of the first convolution (see :class:`DigitNet`).
        depth: 3x3 convolutions in the body.
        deformable_layers: how many of the last body convolutions deform.
        modulated: DCNv2 if True, DCNv1 otherwise.
        train_digits: use only this many digits of the training pool (None: all of them).
        test_digits: use only this many digits of the test pool per condition (None: all).
        test_copies: how many placements of each test digit per condition.
        spread_images: test images per condition whose sampling points are traced.
        device: where to train.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainConfig = field(default_factory=TrainConfig)
    canvas: int = 24
    width: int = 16
    depth: int = BODY_DEPTH
    deformable_layers: int = BODY_DEPTH
    modulated: bool = True
    train_digits: int | None = None
    test_digits: int | None = None
    test_copies: int = 2
    spread_images: int = 64
    device: str = "cpu"


@dataclass
class Run:
    """One trained model of one seed.

    Attributes:
        seed: its training seed.
        accuracy: ``{condition: accuracy in [0, 1]}``.
        history: ``{"loss": [...], "train_accuracy": [...], "test_accuracy": [...]}`` per epoch.
        train_seconds: wall-clock training time (evaluation excluded).
        spread: ``{condition: mean sampling spread in pixels}`` of the centre unit through the
            deformable layers (see :func:`deformconv.demo.sampling.spread`); empty for the plain
            networks, whose spread is fixed (:func:`deformconv.demo.sampling.regular_spread`).
    """

    seed: int
    accuracy: dict[str, float]
    history: dict[str, list[float]]
    train_seconds: float
    spread: dict[str, float] = field(default_factory=dict)


@dataclass
class Results:
    """What a run of the experiment produced.

    Attributes:
        config: the settings.
        params: ``{model: trainable parameter count}``.
        widths: ``{model: channels of its first convolution}``.
        runs: ``{model: [Run per seed]}``.
        models: the trained networks of the first seed, ``{model: DigitNet}`` (for the figures).
        test_sets: ``{condition: (images Tensor[M, 1, canvas, canvas], labels Tensor[M])}``.
        seconds: wall-clock time of the whole experiment.
    """

    config: ExperimentConfig
    params: dict[str, int] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)
    runs: dict[str, list[Run]] = field(default_factory=dict)
    models: dict[str, DigitNet] = field(default_factory=dict)
    test_sets: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    seconds: float = 0.0


def matching_width(params: int, depth: int, start: int) -> int:
    """The smallest width >= ``start`` at which a plain :class:`DigitNet` has at least ``params`` parameters."""
    width = start
    while count_parameters(DigitNet(width, depth)) < params:
        width += 1
    return width


def build_models(config: ExperimentConfig, seed: int, wide_width: int) -> dict[str, DigitNet]:
    """The three networks of one seed; the plain and the deformable one share their initial weights."""
    torch.manual_seed(seed)
    plain = DigitNet(config.width, config.depth)
    deformable = make_deformable(plain, config.deformable_layers, config.modulated)
    torch.manual_seed(seed)
    return {"plain": plain, "wide plain": DigitNet(wide_width, config.depth), "deformable": deformable}


def _first(pool: Digits, count: int | None) -> Digits:
    return pool if count is None else Digits(pool.images[:count], pool.labels[:count])


def run_experiment(config: ExperimentConfig, progress: ProgressBar) -> Results:
    """Trains and tests every model for every seed.

    Args:
        config: the settings.
        progress: where training progress is shown.

    Returns:
        Accuracies per model, seed and test condition, with training histories.
    """
    started = time.perf_counter()
    train_pool, test_pool = load_source_digits()
    train_pool = _first(train_pool, config.train_digits)
    test_pool = _first(test_pool, config.test_digits)
    results = Results(config, runs={model: [] for model in MODELS})
    results.test_sets = make_test_sets(test_pool, TEST_CONDITIONS, config.canvas, config.test_copies)
    curve_images, curve_labels = results.test_sets["in range"]
    curve_set = (curve_images[:CURVE_IMAGES], curve_labels[:CURVE_IMAGES])
    deformable_params = count_parameters(build_models(config, 0, config.width)["deformable"])
    wide_width = matching_width(deformable_params, config.depth, config.width)
    results.widths = {"plain": config.width, "wide plain": wide_width, "deformable": config.width}

    def epoch_data(seed: int) -> Callable[[int], tuple[Tensor, Tensor]]:
        return lambda epoch: training_epoch(train_pool, TRAIN_GEOMETRY, config.canvas, seed, epoch)

    for index, seed in enumerate(config.seeds):
        for name, model in build_models(config, seed, wide_width).items():
            model.to(config.device)
            results.params[name] = count_parameters(model)
            label = f"seed {index + 1}/{len(config.seeds)} {name:<10}"
            history = train(model, epoch_data(seed), curve_set, config.train, label, progress)
            spreads = {}
            if name == "deformable":
                spreads = {
                    condition: mean_spread(model, images[: config.spread_images], BODY_STRIDE)
                    for condition, (images, _) in results.test_sets.items()
                }
            results.runs[name].append(
                Run(
                    seed=seed,
                    accuracy={c: accuracy(model, *test) for c, test in results.test_sets.items()},
                    history={
                        "loss": history.loss,
                        "train_accuracy": history.train_accuracy,
                        "test_accuracy": history.test_accuracy,
                    },
                    train_seconds=history.seconds,
                    spread=spreads,
                )
            )
            if index == 0:
                results.models[name] = model
    results.seconds = time.perf_counter() - started
    return results
