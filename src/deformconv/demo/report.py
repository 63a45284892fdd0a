"""The demo's results as terminal tables, a Markdown page and a JSON file.

Accuracies are summarised over seeds as mean and standard deviation (and min/max in the JSON).
Every model of a seed sees the same data in the same order, so the deformable model's gain over
each plain network is also given seed by seed (paired): its mean, and on how many seeds it was
positive.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path

from deformconv.demo.experiment import MODELS, TEST_CONDITIONS, TRAIN_GEOMETRY, Results
from deformconv.demo.model import BODY_STRIDE
from deformconv.demo.sampling import regular_spread

BASELINES = ("plain", "wide plain")


def summarise(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": spread, "min": min(values), "max": max(values)}


def gains(results: Results, baseline: str) -> dict[str, list[float]]:
    """Per-seed accuracy of the deformable model minus that of ``baseline``, for each condition."""
    pairs = list(zip(results.runs[baseline], results.runs["deformable"]))
    return {c: [d.accuracy[c] - b.accuracy[c] for b, d in pairs] for c in TEST_CONDITIONS}


def to_json(results: Results, extra: dict[str, object]) -> dict[str, object]:
    """The machine-readable results; ``extra`` is merged in at the top level."""
    summary = {}
    for model in MODELS:
        runs = results.runs[model]
        summary[model] = {
            "params": results.params[model],
            "width": results.widths[model],
            "accuracy": {c: summarise([run.accuracy[c] for run in runs]) for c in TEST_CONDITIONS},
            "train_seconds": summarise([run.train_seconds for run in runs]),
        }
    return {
        "config": asdict(results.config),
        "train_geometry": asdict(TRAIN_GEOMETRY),
        "conditions": {
            name: {**asdict(geometry), "description": geometry.describe(), "in_training_range": name == "in range"}
            for name, geometry in TEST_CONDITIONS.items()
        },
        "test_images_per_condition": {name: len(test[1]) for name, test in results.test_sets.items()},
        "summary": summary,
        "gain": {
            f"deformable - {baseline}": {
                c: {**summarise(values), "seeds_better": sum(v > 0 for v in values)}
                for c, values in gains(results, baseline).items()
            }
            for baseline in BASELINES
        },
        "spread_px": {
            "regular_grid": regular_spread(results.config.deformable_layers, BODY_STRIDE),
            "deformable": {
                c: summarise([run.spread[c] for run in results.runs["deformable"]]) for c in TEST_CONDITIONS
            },
        },
        "runs": {model: [asdict(run) for run in results.runs[model]] for model in MODELS},
        "seconds": results.seconds,
        **extra,
    }


def table_rows(results: Results) -> list[list[str]]:
    """Header and rows: model, params, accuracy per condition (mean ± std, %), training time, gains."""
    seeds = len(results.config.seeds)
    rows = [["model", "params", *[f"{c} (%)" for c in TEST_CONDITIONS], "train time / seed"]]
    for model in MODELS:
        runs = results.runs[model]
        cells = [model, f"{results.params[model]:,}"]
        for condition in TEST_CONDITIONS:
            s = summarise([100 * run.accuracy[condition] for run in runs])
            cells.append(f"{s['mean']:.1f} ± {s['std']:.1f}")
        cells.append(f"{statistics.fmean(run.train_seconds for run in runs):.0f} s")
        rows.append(cells)
    for baseline in BASELINES:
        cells = [f"gain over {baseline}", ""]
        for values in gains(results, baseline).values():
            mean = 100 * statistics.fmean(values)
            cells.append(f"{mean:+.1f} ({sum(v > 0 for v in values)}/{seeds} seeds)")
        rows.append([*cells, ""])
    return rows


def spread_rows(results: Results) -> list[list[str]]:
    """Header and rows: sampling spread (pixels) per condition, regular grid vs learned points."""
    regular = regular_spread(results.config.deformable_layers, BODY_STRIDE)
    rows = [["sampling spread (px)", *TEST_CONDITIONS]]
    rows.append(["regular grid (plain)", *[f"{regular:.1f}" for _ in TEST_CONDITIONS]])
    cells = ["deformable"]
    for condition in TEST_CONDITIONS:
        s = summarise([run.spread[condition] for run in results.runs["deformable"]])
        cells.append(f"{s['mean']:.1f} ± {s['std']:.1f}")
    rows.append(cells)
    return rows


def spread_ratios(results: Results) -> str:
    """One sentence: how far the learned points reach in each condition, relative to the training range."""
    runs = results.runs["deformable"]
    mean = {c: statistics.fmean(run.spread[c] for run in runs) for c in TEST_CONDITIONS}
    parts = [f"{mean[c] / mean['in range']:.2f}x as far on {c}" for c in TEST_CONDITIONS if c != "in range"]
    return f"Relative to digits in the training range, the learned points reach {', '.join(parts)} digits."


def format_text(rows: list[list[str]]) -> str:
    """Rows as an aligned plain-text table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_markdown(rows: list[list[str]]) -> str:
    """Rows as a Markdown table."""
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("---" for _ in rows[0]) + "|")
    return "\n".join(lines)


def write_json(data: dict[str, object], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_page(results: Results, figures: dict[str, str], environment: dict[str, object], path: Path) -> None:
    """A Markdown page with the setup, the tables and the figures (paths relative to the page).

    Args:
        results: the experiment's results.
        figures: ``{"sampling": file name, "curves": file name}``.
        environment: versions, backend and threads, shown under "Setup".
        path: where to write the page.
    """
    config = results.config
    train = config.train
    kind = "DCNv2 (modulated)" if config.modulated else "DCNv1"
    conditions = [
        f"- **{name}**: {geometry.describe()}" + (" (the training range)" if name == "in range" else "")
        for name, geometry in TEST_CONDITIONS.items()
    ]
    lines = [
        "# deformconv demo: plain vs deformable convolution on geometrically varied digits",
        "",
        f"Digits from scikit-learn's `load_digits` drawn on a {config.canvas}x{config.canvas} canvas at "
        f"random size, rotation and position. Training: {TRAIN_GEOMETRY.describe()}. Each test "
        "condition uses held-out digits, the same images for every seed:",
        "",
        *conditions,
        "",
        f"The plain and the deformable network have the same layers and start from the same weights; in "
        f"the deformable one the last {config.deformable_layers} of the {config.depth} body 3x3 "
        f"convolutions are {kind}. The wide plain network is the plain one with "
        f"{results.widths['wide plain']} instead of {config.width} base channels, so that it has at "
        "least as many parameters as the deformable one. All see the same images in the same order, "
        f"with the same optimiser (AdamW, lr {train.lr:g}, offset lr x{train.offset_lr_scale:g}, "
        f"{train.epochs} epochs, batch {train.batch_size}); {len(config.seeds)} seeds "
        f"({', '.join(map(str, config.seeds))}).",
        "",
        "## Results",
        "",
        "Accuracy in %, mean ± standard deviation over seeds. The gain rows are the deformable "
        "model's accuracy minus the other model's, seed by seed (in how many seeds it was higher).",
        "",
        format_markdown(table_rows(results)),
        "",
        "## Where the deformable layers look",
        "",
        "Sampling points of one output unit (green) through the stacked deformable layers (red; opacity "
        "follows the DCNv2 mask), against the regular grid of the plain network (blue), for a test "
        "image of each condition (first seed's model).",
        "",
        f"![sampling locations]({figures['sampling']})",
        "",
        "Spread of the sampling points: root-mean-square distance from the unit, in pixels, weighted "
        f"by the mask, for the centre unit of {config.spread_images} test images per condition "
        f"(mean ± std over seeds). {spread_ratios(results)}",
        "",
        format_markdown(spread_rows(results)),
        "",
        "## Training",
        "",
        "Mean over seeds; the band spans the best and the worst seed.",
        "",
        f"![training curves]({figures['curves']})",
        "",
        "## Setup",
        "",
        *[f"- {key}: {value}" for key, value in environment.items()],
        f"- total time: {results.seconds:.0f} s",
        "",
    ]
    path.write_text("\n".join(lines))
