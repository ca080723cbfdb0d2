"""The memory experiment's two figures, drawn with matplotlib (imported only here, and only when needed).

``accuracy.png``: accuracy at the dependent position against the distance D,
one panel per task, one line per cell, chance as a dotted line.
``gradient_norms.png``: ||dL/dh_{t-k}|| against k on a log scale, a grid of
panels (task x training distance), one colour per cell; solid for the trained
model, dashed for the same cell untrained.
"""

from __future__ import annotations

import math

from textgen.errors import ExperimentError
from textgen.lab.curves import pyplot
from textgen.model.cells import CELL_TYPES

# One colour per cell type, the same in every figure.
COLOURS = dict(zip(CELL_TYPES, ("tab:green", "tab:olive", "tab:purple", "tab:blue", "tab:red")))


def require_matplotlib():
    """matplotlib's pyplot, or an error saying how to install it or do without the figures."""
    return pyplot(ExperimentError("the plots need matplotlib: pip install matplotlib, or pass --no-plots. "
                                  "Received: plots=True"))


def _panels(plt, count: int):
    figure, axes = plt.subplots(1, count, figsize=(4.2 * count, 3.6), squeeze=False)
    return figure, axes[0]


def plot_accuracy(result: dict, path) -> None:
    """Accuracy against D per task, one line per cell; written to ``path`` as a PNG."""
    plt = require_matplotlib()
    settings = result["settings"]
    figure, axes = _panels(plt, len(settings["tasks"]))
    for axis, task in zip(axes, settings["tasks"]):
        runs = [run for run in result["runs"] if run["task"] == task]
        for cell in settings["cells"]:
            mine = sorted((run["distance"], run["accuracy"]) for run in runs if run["cell"] == cell)
            axis.plot([d for d, _ in mine], [a for _, a in mine], marker="o", label=cell,
                      color=COLOURS.get(cell))
        if runs:
            axis.axhline(runs[0]["chance"], color="grey", linestyle=":", label="chance")
        axis.set_title(task)
        axis.set_xticks(sorted(settings["distances"]))
        axis.set_xlabel("distance D (tokens)")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy at the dependent position")
    axes[0].legend(loc="upper right")
    figure.suptitle(f"Same parameters (~{settings['parameters']:,}), same {settings['seconds_per_run']:g} CPU s per model")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_gradient_norms(result: dict, path) -> None:
    """||dL/dh_{t-k}|| against k on a log axis: one row of panels per task, one column per training distance.

    Each panel has one colour per cell, solid for the model trained at that D and dashed for the same cell
    untrained (the same dashed curves in every panel of a row, for reference). The key is always K steps back;
    a dotted line marks k = D, the distance the model was trained to bridge.
    """
    plt = require_matplotlib()
    settings = result["settings"]
    tasks, distances = settings["tasks"], sorted(settings["distances"])
    figure, grid = plt.subplots(len(tasks), len(distances), figsize=(3.6 * len(distances), 2.8 * len(tasks)),
                                squeeze=False, sharex=True, sharey=True)
    for row, task in enumerate(tasks):
        for column, distance in enumerate(distances):
            axis = grid[row][column]
            for cell in settings["cells"]:
                trained = [run["gradient_norms"] for run in result["runs"]
                           if run["task"] == task and run["cell"] == cell and run["distance"] == distance]
                untrained = result["untrained_gradient_norms"].get(task, {}).get(cell)
                for norms, style, label in ((trained[0] if trained else None, "-", f"{cell}, trained"),
                                            (untrained, "--", f"{cell}, untrained")):
                    if norms is None:
                        continue
                    # A norm that underflowed to 0 has no place on a log axis: leave a gap.
                    values = [value if value > 0 else math.nan for value in norms]
                    axis.plot(range(len(values)), values, style, label=label, color=COLOURS.get(cell),
                              linewidth=1.1)
            if distance <= result["k_max"]:
                axis.axvline(distance, color="grey", linestyle=":", linewidth=1)
            axis.set_yscale("log")
            axis.set_title(f"{task}, trained at D={distance}", fontsize=9)
            axis.grid(alpha=0.3)
            if row == len(tasks) - 1:
                axis.set_xlabel("k (steps back from the answer)")
        grid[row][0].set_ylabel("||dL_t / dh_{t-k}||")
    grid[0][0].legend(fontsize=6, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=72)  # a 3 x 4 grid stays under 200 KB
    plt.close(figure)
