"""Render a ``Trace`` for people: an HTML page, a PNG heatmap and the raw values as JSON.

``write_report`` writes ``trace.html``, ``trace.png`` and ``trace.json`` into a
folder and never replaces files of those names unless asked to. The pieces are
public too: ``render_html`` (a string), ``render_png`` (a file), and the JSON
is ``Trace.to_dict()``.

The page is ``inspect.html``, package data beside this module, with one
placeholder, ``__TRACE_DATA__``, filled with the trace as JSON in which the
characters ``<``, ``>`` and ``&`` are written as ``\\u`` escapes, so no token
can end the data block early. Token text reaches the page only through
``textContent`` and ``title``, never as markup. The page loads nothing: its
Content-Security-Policy forbids every fetch. Its state lives in three pickers
(layer, quantity, unit); everything that changes the view, the URL hash
(``#layer=1&quantity=forget&unit=7``) included, sets a picker and runs that
picker's change handler, so there is one code path to get right.

Colours are defined here once. ``token_colour`` is the reference: the page's
script receives the same palette and does the same arithmetic, and a browser
test holds the two to each other. Values that are squashed into [-1, 1]
(hidden, candidate) or unbounded (cell) use a diverging blue-white-red scale,
stretched to the largest absolute value of the unit when that exceeds 1;
gates, in [0, 1], use a white-to-purple scale.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np

from textgen.errors import ConfigError, ReportError
from textgen.files import refuse_to_overwrite, write_atomically
from textgen.model_dir import INSPECT_FILES
from textgen.model.trace import QUANTITIES, Trace

PAGE = "inspect.html"  # package data beside this module, with one placeholder, __TRACE_DATA__
DIVERGING = ("candidate", "cell", "hidden")
PALETTE = {"white": (255, 255, 255), "negative": (33, 102, 172), "positive": (178, 24, 43),
           "gate": (84, 39, 143), "missing": (200, 200, 200)}
JUMP_UNITS = 8  # units listed under "most variable" and "most active" in the page
PNG_MAX_UNITS = 32  # rows of a heatmap before it shows only the most variable units
PNG_MAX_LABELS = 120  # tokens before column labels give way to token numbers


@dataclasses.dataclass(frozen=True)
class Selection:
    """What a report shows first: one unit of one quantity of one layer."""

    layer: int
    quantity: str
    unit: int


def check_trace(trace: Trace) -> None:
    """Refuse a trace the renderers cannot draw, naming what is wrong."""
    if not isinstance(trace, Trace):
        raise ConfigError(f"expected a textgen.model.trace.Trace. Received: trace={type(trace).__name__}")
    steps = len(trace.tokens)
    if steps == 0 or not trace.layers:
        raise ConfigError(f"the trace is empty: it needs at least one token and one layer. "
                          f"Received: tokens={steps}, layers={len(trace.layers)}")
    if not 0 <= trace.generated_from <= steps:
        raise ConfigError(f"generated_from must be between 0 and the number of tokens ({steps}). "
                          f"Received: generated_from={trace.generated_from}")
    for index, layer in enumerate(trace.layers):
        if not layer or set(layer) - set(QUANTITIES):
            raise ConfigError(f"layer {index} of the trace must hold some of {', '.join(QUANTITIES)}. "
                              f"Received: names={sorted(layer)}")
        shapes = {np.shape(values) for values in layer.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[0] != steps:
            raise ConfigError(f"every array of layer {index} must be (tokens, units) = ({steps}, U). "
                              f"Received: shapes={sorted(shapes)}")


def quantities_of(layer: dict) -> list[str]:
    """The quantities a layer holds, in the display order of ``QUANTITIES``."""
    return [name for name in QUANTITIES if name in layer]


def rank_units(values: np.ndarray) -> tuple[list[int], list[int]]:
    """Units of a (T, U) array by how much they vary over the tokens, and by mean absolute value.

    Non-finite values count as 0, so one overflow does not make a unit "the most variable".
    """
    finite = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    variable = np.argsort(-finite.std(axis=0), kind="stable")
    active = np.argsort(-np.abs(finite).mean(axis=0), kind="stable")
    return [int(u) for u in variable], [int(u) for u in active]


def select(trace: Trace, layer: int = 0, quantity: str | None = None, unit: int | None = None) -> Selection:
    """Check a choice of layer, quantity and unit against a trace and fill in the defaults.

    The default quantity is the cell state where there is one (the long-term
    memory, where counting and quote-tracking units show up), else the hidden
    state; the default unit is the one that varies most over the text.
    """
    check_trace(trace)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < len(trace.layers):
        raise ConfigError(f"layer must be an integer from 0 to {len(trace.layers) - 1}. Received: layer={layer!r}")
    present = quantities_of(trace.layers[layer])
    if quantity is None:
        quantity = next((name for name in ("cell", "hidden") if name in present), present[0])
    if quantity not in present:
        raise ConfigError(f"a {trace.cell} trace holds {', '.join(present)} in layer {layer}. "
                          f"Received: quantity={quantity!r}")
    values = trace.layers[layer][quantity]
    units = values.shape[1]
    if unit is None:
        unit = rank_units(values)[0][0]
    if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < units:
        raise ConfigError(f"unit must be an integer from 0 to {units - 1}. Received: unit={unit!r}")
    return Selection(int(layer), quantity, int(unit))


def unit_scale(values, quantity: str) -> float:
    """The value that gets the strongest colour: 1, or a unit's largest |value| beyond it (cell)."""
    if quantity not in DIVERGING:
        return 1.0
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    return max([1.0, *finite])


def _round_half_up(x: float) -> int:
    # JavaScript's Math.round, exactly: the nearest integer, halves going up.
    low = math.floor(x)
    return int(low + 1 if x - low >= 0.5 else low)


def _mix(start, end, t: float) -> tuple[int, int, int]:
    return tuple(_round_half_up(a + (b - a) * t) for a, b in zip(start, end))


def token_colour(value: float | None, quantity: str, scale: float = 1.0) -> tuple[int, int, int]:
    """The background the page gives a token whose selected value is ``value``.

    ``value`` is as stored in trace.json (rounded to 6 decimals; None when not
    finite) and ``scale`` is ``unit_scale`` of the selected unit's values.
    """
    if value is None or not math.isfinite(value):
        return PALETTE["missing"]
    if quantity in DIVERGING:
        t = max(-1.0, min(1.0, value / scale))
        end, t = (PALETTE["positive"], t) if t >= 0 else (PALETTE["negative"], -t)
        return _mix(PALETTE["white"], end, t)
    return _mix(PALETTE["white"], PALETTE["gate"], max(0.0, min(1.0, value)))


def trace_json(trace: Trace) -> dict:
    """``trace.to_dict()``, with non-finite values (which JSON cannot hold) as None."""
    data = trace.to_dict()
    if all(np.isfinite(values).all() for layer in trace.layers for values in layer.values()):
        return data
    data["layers"] = [{name: [[v if math.isfinite(v) else None for v in row] for row in rows]
                       for name, rows in layer.items()} for layer in data["layers"]]
    return data


def view_json(trace: Trace) -> dict:
    """Everything a page needs to draw the trace: ``trace_json``, each layer's quantities, the units worth
    jumping to (most variable, most active) and the palette. The report page and ``textgen serve``'s page use it."""
    rankings = []
    for values_by_name in trace.layers:
        rankings.append({})
        for name, values in values_by_name.items():
            variable, active = rank_units(values)
            rankings[-1][name] = {"variable": variable[:JUMP_UNITS], "active": active[:JUMP_UNITS]}
    return {**trace_json(trace), "quantities": [quantities_of(values_by_name) for values_by_name in trace.layers],
            "rankings": rankings,
            "palette": {**{name: list(rgb) for name, rgb in PALETTE.items()}, "diverging": list(DIVERGING)}}


def render_html(trace: Trace, *, layer: int = 0, quantity: str | None = None, unit: int | None = None) -> str:
    """A self-contained HTML page showing the trace, starting on the given selection.

    The page opens on ``select(trace, layer, quantity, unit)``; a URL hash such
    as ``#layer=1&quantity=forget&unit=7`` overrides that when it is opened.
    """
    payload = {**view_json(trace), "initial": dataclasses.asdict(select(trace, layer, quantity, unit))}
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    # Inside a <script> block only "</script" and "<!--" are dangerous; escaping every
    # <, > and & (legal JSON string escapes) rules both out whatever the tokens hold.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = importlib.resources.files(__package__).joinpath(PAGE).read_text(encoding="utf-8")
    return template.replace("__TRACE_DATA__", text)


def visible_token(token: str, limit: int = 12) -> str:
    """A token as a heatmap label: control characters and spaces as symbols, long ones cut."""
    symbols = {"\n": "\u21b5", "\t": "\u21e5", " ": "\u2423", "\x7f": "\u2421"}
    text = "".join(symbols.get(ch, chr(0x2400 + ord(ch)) if ord(ch) < 0x20 else ch) for ch in token) or "\u2205"
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _png_bytes(trace: Trace, chosen: Selection, max_units: int) -> bytes:
    # Figure + its own canvas rather than pyplot: no display, and no switching the
    # backend of a caller who uses matplotlib interactively (a notebook, say).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure

    quantity = chosen.quantity
    steps = len(trace.tokens)
    shown = [index for index, layer in enumerate(trace.layers) if quantity in layer]
    rows_by_layer = {}
    for index in shown:
        values = trace.layers[index][quantity]
        order = rank_units(values)[0] if values.shape[1] > max_units else list(range(values.shape[1]))
        rows = order[:max_units]
        if index == chosen.layer and chosen.unit not in rows:
            rows = rows[:-1] + [chosen.unit]  # the unit the user asked for is always drawn
        rows_by_layer[index] = rows
    if quantity in DIVERGING:
        colours = [PALETTE["negative"], PALETTE["white"], PALETTE["positive"]]
    else:
        colours = [PALETTE["white"], PALETTE["gate"]]
    cmap = LinearSegmentedColormap.from_list("textgen", [tuple(c / 255 for c in rgb) for rgb in colours])
    cmap = cmap.with_extremes(bad=tuple(c / 255 for c in PALETTE["missing"]))

    heights = [max(1.6, 0.16 * len(rows_by_layer[index]) + 0.9) for index in shown]
    width = min(max(6.0, 2.5 + 0.14 * steps), 40.0)
    figure = Figure(figsize=(width, sum(heights) + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(len(shown), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    labels = [visible_token(token) for token in trace.tokens]
    notes = [f"{trace.cell} {quantity}, units down, tokens across",
             f"unit {chosen.unit} of layer {chosen.layer} in bold"]
    if 0 < trace.generated_from < steps:
        notes.append("dashed line: generated text starts")
    figure.suptitle("; ".join(notes), fontsize=9)
    for axes, index in zip(axes_list, shown):
        rows = rows_by_layer[index]
        values = np.asarray(trace.layers[index][quantity], dtype=np.float64)[:, rows].T
        values = np.ma.masked_invalid(values)
        if quantity in DIVERGING:
            scale = max(1.0, float(np.abs(values).max()) if values.count() else 1.0)
            limits = (-scale, scale)
        else:
            limits = (0.0, 1.0)
        image = axes.imshow(values, aspect="auto", cmap=cmap, vmin=limits[0], vmax=limits[1],
                            interpolation="nearest")
        figure.colorbar(image, ax=axes, fraction=0.03, pad=0.01)
        units = trace.layers[index][quantity].shape[1]
        which = f"the most variable {len(rows)} of {units} units" if units > max_units else f"{units} units"
        axes.set_title(f"layer {index}: {quantity}, {which}", fontsize=9, loc="left")
        axes.set_yticks(range(len(rows)), [str(u) for u in rows], fontsize=6)
        for tick, unit in zip(axes.get_yticklabels(), rows):
            if index == chosen.layer and unit == chosen.unit:
                tick.set_fontweight("bold")
        axes.set_ylabel("unit", fontsize=8)
        if steps <= PNG_MAX_LABELS:
            vertical = any(len(label) > 2 for label in labels)
            axes.set_xticks(range(steps), labels, fontsize=7, rotation=90 if vertical else 0)
        else:
            axes.set_xlabel("token", fontsize=8)
        if 0 < trace.generated_from < steps:
            axes.axvline(trace.generated_from - 0.5, color="black", linewidth=1.2, linestyle="--")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A token in a script the default font lacks (CJK, emoji) is drawn as a box;
        # that is no reason to warn the user.
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def render_png(trace: Trace, path, *, layer: int = 0, quantity: str | None = None, unit: int | None = None,
               max_units: int = PNG_MAX_UNITS) -> Path:
    """Write a PNG heatmap of one quantity, one panel per layer: units down, tokens across.

    With more than ``max_units`` units a panel shows only the most variable
    ones, and always the selected unit (labelled in bold). Colours are those
    of the page, on one scale per panel so units can be compared. A dashed
    line marks where the generated text begins. Overwrites ``path``;
    ``write_report`` is the careful one.
    """
    if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1:
        raise ConfigError(f"max_units must be a positive integer. Received: max_units={max_units!r}")
    path = Path(path)
    data = _png_bytes(trace, select(trace, layer, quantity, unit), max_units)
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise ReportError(f"could not write the PNG: {exc.strerror or exc}. Received: path='{path}'") from None
    return path


def check_destination(out_dir, *, overwrite: bool = False, files: dict[str, str] = INSPECT_FILES) -> dict[str, Path]:
    """The report's paths in ``out_dir``, or a ``ReportError`` if writing there would lose something.

    ``files`` names the report's files by kind: those of ``textgen inspect``
    unless another report (``CELLS_FILES``) says otherwise. Only those files
    can be replaced, and only with ``overwrite``; other files in the folder
    are never touched.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"the output path exists and is not a directory. Received: out='{out_dir}'")
    paths = {kind: out_dir / name for kind, name in files.items()}
    refuse_to_overwrite(paths.values(), overwrite=overwrite, error=ReportError,
                        hint="pass --overwrite to replace the report or choose another --out")
    return paths


def write_report(trace: Trace, out_dir, *, layer: int = 0, quantity: str | None = None, unit: int | None = None,
                 overwrite: bool = False) -> dict[str, Path]:
    """Write trace.html, trace.png and trace.json into ``out_dir``; return their paths by kind.

    ``out_dir`` is created if missing. Existing files of those names are
    replaced only with ``overwrite``; otherwise nothing is written at all.
    Everything is rendered before the first file is written.
    """
    chosen = select(trace, layer, quantity, unit)
    out_dir = Path(out_dir)
    paths = check_destination(out_dir, overwrite=overwrite)
    contents = {
        "html": render_html(trace, layer=chosen.layer, quantity=chosen.quantity, unit=chosen.unit).encode("utf-8"),
        "png": _png_bytes(trace, chosen, PNG_MAX_UNITS),
        "json": json.dumps(trace_json(trace), separators=(",", ":"), allow_nan=False).encode("utf-8"),
    }
    return write_report_files(out_dir, paths, contents)


def write_report_files(out_dir: Path, paths: dict[str, Path], contents: dict[str, bytes]) -> dict[str, Path]:
    """Write each of a report's rendered files (``contents`` by kind) to its path from ``check_destination``,
    atomically, creating ``out_dir`` if missing; return ``paths``."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for kind, path in paths.items():
            write_atomically(path, contents[kind])
    except OSError as exc:
        raise ReportError(f"could not write the report: {exc.strerror or exc}. Received: out='{out_dir}'") from None
    return paths
