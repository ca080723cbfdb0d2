"""Find the cells that mean something: units whose value follows a nameable feature of the text.

``find_cells`` takes a ``Trace`` (every gate and state of every layer, token
by token) and, for each feature of ``textgen.lab.features``, looks for the
units that follow it, as Karpathy, Johnson and Fei-Fei (2015) did by hand:

* The T tokens are split in two halves: the first (tokens 0 to split - 1,
  split = T // 2) is searched, the second is held out.
* On the first half, the Pearson correlation r of the feature with every
  unit of every quantity of every layer is computed at once (both sides
  standardised, one matrix product). A unit or a feature that is constant on
  a half has r = 0 there, never NaN: constant means a standard deviation of
  at most ``CONSTANT_TOLERANCE`` times its largest magnitude (or 1), so
  float32 rounding alone never makes a saturated gate look like it varies.
  Non-finite values of a unit count as 0.
* The ``top`` units with the largest |r| are kept, best first, and each is
  reported with its r on the held-out half.
* The chance level of a feature is a control: the largest |r| over all units
  on the first half when the feature is shifted circularly by T //
  ``CONTROL_SHIFT`` tokens (a quarter of the text). The shifted feature keeps
  its own rhythm (how long a quote lasts, how lines alternate) but is no
  longer aligned with the text, so this is the best a search over so many
  units finds by coincidence.
* A feature counts as tracked when its best unit's held-out r has the sign
  of its r found, |r| of at least ``TRACKED_R``, and |r| above the chance
  level. One half of a short text is little evidence: "not tracked" often
  means "not shown by this text", and a tracked count feature may be matched
  by a unit that follows something merely correlated with it.

Gate saturation, for every gate of every layer (``GATES`` the cell has): the
share of all T tokens at which each unit is below ``LEFT_SATURATED`` (shut)
or above ``RIGHT_SATURATED`` (open), the statistic of the same paper.

``CellReport.to_dict()`` is the JSON that ``textgen.lab.cells_page`` writes to
cells.json and shows on its page; ``render_table``
is the summary ``textgen cells`` prints. ``text_to_read`` picks the text a
model reads for this, as ``TextModel.find_cells`` does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from textgen.config import CELLS_CHARACTERS, CELLS_MAX_CHARACTERS, check_int, fail
from textgen.errors import ConfigError
from textgen.lab.features import Feature, resolve_features
from textgen.lab.inspect import check_trace
from textgen.model.trace import GATES, QUANTITIES, Trace

TRACKED_R = 0.5  # the held-out |r| a feature's best unit needs for the feature to count as tracked
LEFT_SATURATED = 0.1  # a gate below this is shut (left-saturated)
RIGHT_SATURATED = 0.9  # a gate above this is open (right-saturated)
CONTROL_SHIFT = 4  # the control shifts each feature circularly by T // CONTROL_SHIFT tokens
CONSTANT_TOLERANCE = 1e-6  # a standard deviation at most this share of the largest |value| (or 1) is none
MIN_TOKENS = 20  # each half needs enough tokens for a correlation to say anything
MAX_TOP = 50  # units reported per feature, at most


@dataclasses.dataclass(frozen=True)
class UnitMatch:
    """One unit of one quantity of one layer, with its correlation with a feature on each half."""

    layer: int
    quantity: str
    unit: int
    r_found: float  # on the first half, where it was searched for
    r_held_out: float  # on the second half


@dataclasses.dataclass
class FeatureResult:
    """What the search found for one feature: its values, its best units, the chance level and the verdict."""

    name: str
    description: str
    kind: str
    values: np.ndarray  # (T,) the feature after each token
    best: list[UnitMatch]  # the top units by |r_found|, best first
    chance: float  # the best |r| of the circularly shifted feature on the first half
    tracked: bool
    unit_values: np.ndarray  # (T,) the best unit's values


@dataclasses.dataclass
class GateSaturation:
    """For one gate of one layer: the share of tokens at which each unit is shut (left) and open (right)."""

    layer: int
    gate: str
    left: np.ndarray  # (U,) share of tokens below LEFT_SATURATED
    right: np.ndarray  # (U,) share of tokens above RIGHT_SATURATED


@dataclasses.dataclass
class CellReport:
    """The result of ``find_cells``: per feature its best units, and per gate its saturation.

    ``split`` is the index of the first held-out token; ``threshold`` is ``TRACKED_R``.
    """

    model: str | None
    cell: str
    layers: int
    units: int
    source: str
    tokens: list[str]
    split: int
    threshold: float
    features: list[FeatureResult]
    saturation: list[GateSaturation]

    @property
    def tracked(self) -> list[str]:
        """The names of the features that count as tracked, in report order."""
        return [feature.name for feature in self.features if feature.tracked]

    def to_dict(self) -> dict:
        """A JSON-ready dict (the cells.json format): floats rounded to 6 decimals, non-finite ones None."""
        return {
            "model": self.model, "cell": self.cell, "layers": int(self.layers), "units": int(self.units),
            "source": self.source, "tokens": list(self.tokens), "split": int(self.split),
            "threshold": _number(self.threshold),
            "features": [{
                "name": feature.name, "description": feature.description, "kind": feature.kind,
                "values": _numbers(feature.values),
                "best": [{"layer": int(match.layer), "quantity": match.quantity, "unit": int(match.unit),
                          "r_found": _number(match.r_found), "r_held_out": _number(match.r_held_out)}
                         for match in feature.best],
                "chance": _number(feature.chance), "tracked": bool(feature.tracked),
                "unit_values": _numbers(feature.unit_values),
            } for feature in self.features],
            "saturation": [{"layer": int(gate.layer), "gate": gate.gate, "left": _numbers(gate.left),
                            "right": _numbers(gate.right)} for gate in self.saturation],
        }


def _number(value) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _numbers(values) -> list[float | None]:
    return [_number(value) for value in np.asarray(values, dtype=np.float64).ravel()]


def standardise(values: np.ndarray) -> np.ndarray:
    """(n, k) -> (n, k) float64: each column centred and scaled to unit variance; a constant column all 0.

    Non-finite values count as 0. With two standardised columns a and b,
    ``a @ b / n`` is their Pearson correlation, 0 where either is constant.
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    centred = values - values.mean(axis=0)
    spread = np.sqrt(np.mean(centred * centred, axis=0))  # (k,)
    scale = np.maximum(1.0, np.abs(values).max(axis=0, initial=0.0))
    constant = spread <= CONSTANT_TOLERANCE * scale
    return np.where(constant, 0.0, centred / np.where(constant, 1.0, spread))


def _candidates(trace: Trace) -> list[tuple[int, str, np.ndarray]]:
    """Every (layer, quantity, values (T, U)) of the trace, layer by layer in the order of ``QUANTITIES``."""
    return [(index, name, layer[name]) for index, layer in enumerate(trace.layers)
            for name in QUANTITIES if name in layer]


def find_cells(trace: Trace, features: Sequence[Feature | str] | None = None, top: int = 3, *,
               model: str | None = None, source: str = "a trace") -> CellReport:
    """Search every unit of ``trace`` for the ones that follow each feature; see the module's docstring.

    ``features`` are names of built-in features or ``Feature`` objects (None:
    every built-in one). ``top`` units are reported per feature (fewer where
    the model has fewer). ``model`` and ``source`` are only recorded: what
    model made the trace and what text it read.
    """
    check_trace(trace)
    check_int("top", top, 1, MAX_TOP)
    steps = len(trace.tokens)
    if steps < MIN_TOKENS:
        fail(f"finding cells needs a text of at least {MIN_TOKENS} tokens, half of them held out", "tokens", steps)
    chosen = resolve_features(features)
    values = np.stack([feature.values(trace.tokens) for feature in chosen], axis=1)  # (T, K)
    split = steps // 2
    shifted = np.roll(values, steps // CONTROL_SHIFT, axis=0)  # (T, K), the control

    # Standardised once: (n, K) each, so every correlation below is one product (K, n) @ (n, U) / n.
    first_features, second_features = standardise(values[:split]), standardise(values[split:])
    control_features = standardise(shifted[:split])
    candidates = _candidates(trace)
    found, held_out, control = [], [], []  # each a list of (K, U) blocks, one per (layer, quantity)
    for _, _, unit_values in candidates:
        first, second = standardise(unit_values[:split]), standardise(unit_values[split:])  # (n, U) each
        found.append(first_features.T @ first / split)
        held_out.append(second_features.T @ second / (steps - split))
        control.append(control_features.T @ first / split)
    found, held_out, control = (np.clip(np.concatenate(blocks, axis=1), -1.0, 1.0)  # (K, M), M all units
                                for blocks in (found, held_out, control))
    where = [(layer, name, unit) for layer, name, unit_values in candidates for unit in range(unit_values.shape[1])]

    results = []
    for k, feature in enumerate(chosen):
        order = np.argsort(-np.abs(found[k]), kind="stable")[:top]
        best = [UnitMatch(*where[m], r_found=float(found[k, m]), r_held_out=float(held_out[k, m])) for m in order]
        chance = float(np.abs(control[k]).max())
        lead = best[0]
        tracked = (abs(lead.r_held_out) >= TRACKED_R and abs(lead.r_held_out) > chance
                   and lead.r_found * lead.r_held_out > 0)
        unit_values = np.asarray(trace.layers[lead.layer][lead.quantity][:, lead.unit], dtype=np.float64)
        results.append(FeatureResult(feature.name, feature.description, feature.kind, values[:, k], best, chance,
                                     bool(tracked), unit_values))
    return CellReport(model=model, cell=trace.cell, layers=len(trace.layers), units=trace.units, source=source,
                      tokens=list(trace.tokens), split=split, threshold=TRACKED_R, features=results,
                      saturation=gate_saturation(trace))


def gate_saturation(trace: Trace) -> list[GateSaturation]:
    """For every gate of every layer (those of ``GATES`` the trace holds), each unit's share of tokens at which it
    is below ``LEFT_SATURATED`` and above ``RIGHT_SATURATED``. A non-finite value is neither."""
    check_trace(trace)
    result = []
    for index, layer in enumerate(trace.layers):
        for gate in GATES:
            if gate in layer:
                values = np.asarray(layer[gate], dtype=np.float64)  # (T, U)
                result.append(GateSaturation(index, gate, (values < LEFT_SATURATED).mean(axis=0),
                                             (values > RIGHT_SATURATED).mean(axis=0)))
    return result


def unit_name(match: UnitMatch) -> str:
    """How a unit is named for people: ``layer 1 cell #17`` (layers and units count from 0)."""
    return f"layer {match.layer} {match.quantity} #{match.unit}"


def render_table(report: CellReport) -> str:
    """The report in a few lines: per feature its best unit, r found, r held out, the chance level and the verdict."""
    header = ("feature", "best unit", "r found", "r held-out", "chance", "tracked")
    rows = []
    for feature in report.features:
        # A feature constant over the searched half correlates with nothing: no unit is "best".
        constant = np.ptp(feature.values[:report.split]) == 0
        lead = feature.best[0]
        rows.append((feature.name, "none (feature constant)" if constant else unit_name(lead),
                     f"{lead.r_found:+.3f}", f"{lead.r_held_out:+.3f}", f"{feature.chance:.3f}",
                     "yes" if feature.tracked else "no"))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in (header, *rows)]
    steps = len(report.tokens)
    lines.append(f"{len(report.tracked)} of {len(report.features)} features tracked (held-out r of the same sign, "
                 f"|r| >= {report.threshold} and above chance); searched tokens 0-{report.split - 1}, "
                 f"held out {report.split}-{steps - 1}")
    return "\n".join(lines)


def text_to_read(text: str | None = None, *, corpus=None, characters: int = CELLS_CHARACTERS,
                 trained_on: dict | None = None) -> tuple[str, str]:
    """The text a model reads to find its cells, and what it is (a report's ``source``).

    The first ``characters`` characters (1 to ``CELLS_MAX_CHARACTERS``) of:
    ``text``; else the corpus ``corpus`` names (anything
    ``textgen.data.corpus.open_corpus`` takes: a named corpus, a file, a
    folder or a glob); else the corpus a model was trained on, as its
    manifest's ``corpus`` section ``trained_on`` records it, when that can be
    read here without a download (``recorded_corpus``). Corpora are read as
    UTF-8, undecodable bytes replaced.
    """
    from textgen.data.corpus import open_corpus, recorded_corpus  # here, so that textgen --help need not

    check_int("characters", characters, 1, CELLS_MAX_CHARACTERS)
    if text is not None and corpus is not None:
        raise ConfigError(f"give a text or a corpus, not both. Received: corpus={corpus!r}")
    if text is not None:
        if not isinstance(text, str):
            raise ConfigError(f"text must be a string. Received: text={type(text).__name__}")
        text = text[:characters]
        return text, f"given text, characters 0-{len(text)}"
    if corpus is not None:
        source = open_corpus(corpus, errors="replace")
        head = source.read_head(characters)
        return head, f"corpus {source.description}, characters 0-{len(head)}"
    found = recorded_corpus(trained_on)
    if found is None:
        recorded = (trained_on or {}).get("description") if isinstance(trained_on, dict) else None
        what = f"the corpus this model was trained on ({recorded}) cannot be read here without a download" \
            if recorded else "this model does not record the corpus it was trained on"
        raise ConfigError(f"{what}; pass a text, or a corpus to read (corpus= in Python, --corpus on the command "
                          f"line), such as python. Received: corpus=None")
    source, same = found
    head = source.read_head(characters)
    how = "the corpus the model was trained on" if same else "not the copy the model was trained on: its bytes differ"
    return head, f"corpus {source.description} ({how}), characters 0-{len(head)}"
