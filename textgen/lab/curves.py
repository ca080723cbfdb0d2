"""Learning curves: the training and validation losses of trained models, read from their directories and plotted.

``read_curves`` takes a model directory's curves from its manifest's metrics:
the training loss every few steps (``train_curve``; from a directory written
before it was kept, the epoch means of ``history``) and the validation loss
at each validation (``history``), each point with its step and wall-clock
seconds. ``plot_curves`` draws several models in one PNG of two panels,
loss against steps and loss against time, with matplotlib's file-only Agg
backend.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from textgen import model_dir
from textgen.errors import PlotError, TextgenError
from textgen.files import refuse_to_overwrite


@dataclasses.dataclass
class Curves:
    """One model's losses: ``train`` and ``validation`` as (step, seconds, loss) points, in step order."""

    name: str
    train: list[tuple[int, float, float]]
    validation: list[tuple[int, float, float]]


def read_curves(path) -> Curves:
    """The learning curves of the model directory (or shipped model) at ``path``, named after its folder."""
    folder, manifest = model_dir.read_manifest(path)
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    history = [r for r in metrics.get("history") or [] if isinstance(r, dict)]
    validation = [(r["step"], r["seconds"], r["val_loss"]) for r in history
                  if _numbers(r.get("step"), r.get("seconds"), r.get("val_loss"))]
    points = metrics["train_curve"] if "train_curve" in metrics else \
        [{"step": r.get("step"), "seconds": r.get("seconds"), "loss": r.get("train_loss")} for r in history]
    train = [(p["step"], p["seconds"], p["loss"]) for p in (points if isinstance(points, list) else [])
             if isinstance(p, dict) and _numbers(p.get("step"), p.get("seconds"), p.get("loss"))]
    if not train and not validation:
        raise PlotError(f"the model's metrics hold no loss curve to plot. Received: path='{path}'")
    return Curves(Path(folder).name, train, validation)


def _numbers(*values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_curves(curves: Sequence[Curves], path, *, overwrite: bool = False) -> Path:
    """Draw ``curves`` into the PNG ``path``: loss against steps (left) and against wall-clock time (right).

    One colour per model; the training loss is a solid line, the validation
    loss dashed with a dot at each validation. An existing file is refused
    unless ``overwrite``.
    """
    path = Path(path)
    refuse_to_overwrite([path], overwrite=overwrite, error=PlotError, hint="pass --overwrite to replace it")
    plt = _pyplot()
    longest = max((point[1] for c in curves for point in (*c.train, *c.validation)), default=0.0)
    unit, scale = ("minutes", 60.0) if longest > 600 else ("seconds", 1.0)
    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, curve in enumerate(curves):
        colour = colours[index % len(colours)]
        for points, style, what in ((curve.train, dict(linestyle="-"), "training"),
                                    (curve.validation, dict(linestyle="--", marker="o", markersize=3), "validation")):
            if not points:
                continue
            steps, seconds, losses = zip(*points)
            by_step.plot(steps, losses, color=colour, label=f"{curve.name}, {what}", linewidth=1.2, **style)
            by_time.plot([s / scale for s in seconds], losses, color=colour, linewidth=1.2, **style)
    by_step.set_xlabel("step")
    by_time.set_xlabel(f"wall-clock time ({unit})")
    by_step.set_ylabel("loss (nats/token)")
    for axis in (by_step, by_time):
        axis.grid(alpha=0.3)
    by_step.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100, format="png")
    except OSError as exc:
        raise PlotError(f"cannot write the plot: {exc.strerror or exc}. Received: path='{path}'") from None
    finally:
        plt.close(figure)
    return path


def _pyplot():
    return pyplot(PlotError("plotting needs matplotlib: pip install matplotlib. Received: plot=True"))


def pyplot(missing: TextgenError):
    """matplotlib's pyplot on the file-only Agg backend (no display is needed, and none is ever opened);
    ``missing`` is raised when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise missing from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
