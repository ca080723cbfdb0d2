"""The report of ``textgen cells``: its page (which units track which text features, how saturated the gates
are) and its files, cells.html and cells.json (``write_cells_report``).

``render_cells_html`` turns the report of ``textgen.lab.cells`` into one
self-contained HTML page: a summary table (one row per feature, tracked
features first), the selected feature's best unit coloured over an excerpt
of the held-out half of the text with the feature's own value beside it, and
the gate saturation plots of Karpathy, Johnson and Fei-Fei (2015), figure 3,
drawn here as inline SVG.

The page is ``cells.html``, package data beside this module, with
placeholders ``__CELLS_...__``. They are filled in one pass over the template,
so text put in for one placeholder (a token that reads ``__CELLS_DATA__``) is
never itself searched for another. Every string from the report reaches the
markup through ``html.escape``; the token excerpt travels as JSON inside a
``<script type="application/json">`` block, with ``<``, ``>`` and ``&``
written as ``\\u`` escapes so no token can end that block, and the page's
script puts tokens on the page with ``textContent`` only. The page loads
nothing: its Content-Security-Policy forbids every fetch.

Colours come from ``textgen.lab.inspect.token_colour``, computed here rather
than in the page's script, so there is no second copy of the arithmetic: the
unit's value on inspect's scale for its quantity, the feature's value from
white (its lowest) to purple (its highest).
"""

from __future__ import annotations

import html
import importlib.resources
import json
import math
import re

from pathlib import Path

from textgen.errors import ConfigError
from textgen.lab.cells import CONTROL_SHIFT, LEFT_SATURATED, RIGHT_SATURATED, CellReport
from textgen.lab.inspect import (DIVERGING, PALETTE, check_destination, token_colour, unit_scale, visible_token,
                                 write_report_files)
from textgen.model_dir import CELLS_FILES

PAGE = "cells.html"  # package data beside this module, with the placeholders of _PLACEHOLDER
_PLACEHOLDER = re.compile(r"__CELLS_[A-Z]+__")
FEATURE_SCALE = "feature"  # not in inspect's DIVERGING: token_colour draws [0, 1] white to purple
# One colour per gate, in the order the gates first appear in the report; a gate keeps its colour in every layer.
GATE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_PLOT = {"width": 430, "height": 330, "left": 56, "top": 30, "size": 250}  # one layer's scatter plot, in px


def _finite(value) -> float | None:
    """A number as the page holds it: a float, or None where it is missing or not finite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value, digits: int = 3) -> str:
    value = _finite(value)
    return "n/a" if value is None else f"{value:.{digits}f}"


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _check(report: dict, excerpt_tokens: int) -> None:
    """Refuse a report the page cannot draw, naming what is wrong."""
    if isinstance(excerpt_tokens, bool) or not isinstance(excerpt_tokens, int) or excerpt_tokens < 1:
        raise ConfigError(f"excerpt_tokens must be a positive integer. Received: excerpt_tokens={excerpt_tokens!r}")
    if not isinstance(report, dict):
        raise ConfigError(f"expected the report of textgen.lab.cells, a dict. Received: report={type(report).__name__}")
    missing = sorted({"cell", "tokens", "split", "threshold", "features", "saturation"} - set(report))
    if missing:
        raise ConfigError(f"the report lacks {', '.join(missing)}. Received: keys={sorted(report)}")
    tokens = report["tokens"]
    if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
        raise ConfigError("the report's tokens must be a list of strings. "
                          f"Received: tokens={type(tokens).__name__}")
    split = report["split"]
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split <= len(tokens):
        raise ConfigError(f"split must be an integer from 0 to the number of tokens ({len(tokens)}). "
                          f"Received: split={split!r}")
    if not isinstance(report["features"], list) or not isinstance(report["saturation"], list):
        raise ConfigError("the report's features and saturation must be lists. "
                          f"Received: features={type(report['features']).__name__}, "
                          f"saturation={type(report['saturation']).__name__}")
    for index, feature in enumerate(report["features"]):
        if not isinstance(feature, dict) or {"name", "values", "best", "tracked", "unit_values"} - set(feature):
            raise ConfigError(f"feature {index} of the report needs name, values, best, tracked and unit_values. "
                              f"Received: {sorted(feature) if isinstance(feature, dict) else type(feature).__name__}")
        lengths = {key: len(feature[key]) if isinstance(feature[key], list) else None
                   for key in ("values", "unit_values")}
        if set(lengths.values()) != {len(tokens)}:
            raise ConfigError(f"feature {feature['name']!r} must hold one value and one unit value per token "
                              f"({len(tokens)}). Received: {lengths}")
        best = feature["best"]
        keys = {"layer", "quantity", "unit", "r_found", "r_held_out"}
        if not isinstance(best, list) or not all(isinstance(b, dict) and keys <= set(b) for b in best):
            raise ConfigError(f"the best units of feature {feature['name']!r} must each name "
                              f"{', '.join(sorted(keys))}. Received: best={best!r:.200}")
    for index, entry in enumerate(report["saturation"]):
        if (not isinstance(entry, dict) or {"layer", "gate", "left", "right"} - set(entry)
                or not isinstance(entry["left"], list) or not isinstance(entry["right"], list)
                or len(entry["left"]) != len(entry["right"])):
            raise ConfigError(f"saturation entry {index} needs layer, gate, and left and right lists of one "
                              f"length. Received: {entry!r:.200}")


def _display(token: str) -> str:
    """A token as the excerpt shows it: inspect's symbols for control characters and spaces stay plain text,
    except that a newline or tab, after its symbol, still breaks the line or indents."""
    if token == "":
        return visible_token("")
    shown = []
    for ch in token:
        # A space is shown as itself in running text; visible_token's open box is for labels.
        shown.append(ch if ch == " " else visible_token(ch) + (ch if ch in "\n\t" else ""))
    return "".join(shown)


def _best_label(best: dict) -> str:
    return f"layer {best['layer']} {best['quantity']} #{best['unit']}"


def _feature_colours(values: list) -> list[str]:
    """The feature's values from white at its lowest (or 0) to purple at its highest."""
    finite = [v for v in (_finite(v) for v in values) if v is not None]
    low = min([0.0, *finite])
    span = max([low, *finite]) - low
    return [_hex(token_colour(None if v is None else (v - low) / span if span else 0.0, FEATURE_SCALE))
            for v in map(_finite, values)]


def _caption(feature: dict, threshold: float) -> str:
    """What the excerpt of one feature shows, in words."""
    name = feature["name"]
    if not feature["best"]:
        return f"{name}: the report names no unit for this feature."
    best = feature["best"][0]
    quantity = best["quantity"]
    held = _finite(best["r_held_out"])
    words = [f"{name}: best unit {_best_label(best)}, r = {_fmt(held)} on the held-out half "
             f"({_fmt(best['r_found'])} on the half where it was found; chance {_fmt(feature.get('chance'))})."]
    if not feature["tracked"]:
        words.append(f"No unit tracks this feature (held-out |r| below {_fmt(threshold, 2)}); "
                     "the best one is shown anyway.")
    if held is not None and held < 0:
        words.append("r is negative: the unit runs opposite to the feature, low where the feature is high.")
    if quantity in DIVERGING:
        words.append(f"Unit: {quantity}, blue below 0, white at 0, red above.")
    else:
        words.append(f"Unit: {quantity}, white at 0 to purple at 1.")
    words.append(f"Feature ({feature.get('kind', 'value')}): white at its lowest to purple at its highest.")
    return " ".join(words)


def _summary_rows(features: list[dict]) -> str:
    rows = []
    for index, feature in enumerate(features):
        best = feature["best"][0] if feature["best"] else None
        cells = [feature["name"], feature.get("description") or "",
                 _best_label(best) if best else "none",
                 _fmt(best["r_found"]) if best else "n/a", _fmt(best["r_held_out"]) if best else "n/a",
                 _fmt(feature.get("chance")), "yes" if feature["tracked"] else "no"]
        status = "tracked" if feature["tracked"] else "untracked"
        rows.append(f'<tr data-feature="{index}" class="{status}">'
                    + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>")
    return "\n".join(rows)


def _untracked_note(features: list[dict], threshold: float) -> str:
    untracked = [feature["name"] for feature in features if not feature["tracked"]]
    limit = _fmt(threshold, 2)
    if not features:
        return "The report holds no features."
    if not untracked:
        return f"Every feature has a unit that tracks it: held-out |r| of at least {limit}."
    names = ", ".join(untracked)
    if len(untracked) == len(features):
        return f"No unit tracks any of the features ({names}): no held-out |r| reaches {limit}."
    return f"No unit tracks {names}: no held-out |r| reaches {limit}."


def saturation_svg(layer: int, entries: list[dict], colours: dict[str, str]) -> str:
    """One layer's gate saturation plot as an SVG element: one dot per unit per gate, a legend, axes 0..1.

    x is the fraction of the time a unit's gate is left-saturated (below 0.1),
    y the fraction it is right-saturated (above 0.9). Dots whose fractions are
    not finite are left out and counted under the plot.
    """
    p = _PLOT
    left, top, size = p["left"], p["top"], p["size"]
    parts = [f'<svg class="saturation" data-layer="{int(layer)}" '
             f'width="{p["width"]}" height="{p["height"]}" viewBox="0 0 {p["width"]} {p["height"]}" '
             f'role="img" aria-label="gate saturation of layer {int(layer)}">',
             f'<text x="{left + size / 2}" y="18" text-anchor="middle" class="title">layer {int(layer)}</text>',
             f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="#fff" stroke="#444"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = left + tick * size, top + (1 - tick) * size
        if 0 < tick < 1:
            parts.append(f'<line x1="{x}" y1="{top}" x2="{x}" y2="{top + size}" stroke="#e4e4e4"/>')
            parts.append(f'<line x1="{left}" y1="{y}" x2="{left + size}" y2="{y}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{x}" y="{top + size + 14}" text-anchor="middle" class="tick">{tick:g}</text>')
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" class="tick">{tick:g}</text>')
    parts.append(f'<text x="{left + size / 2}" y="{top + size + 32}" text-anchor="middle" class="axis">'
                 f'fraction left-saturated (&lt; {LEFT_SATURATED:g})</text>')
    parts.append(f'<text transform="translate(16 {top + size / 2}) rotate(-90)" text-anchor="middle" '
                 f'class="axis">fraction right-saturated (&gt; {RIGHT_SATURATED:g})</text>')
    skipped = 0
    for entry in entries:
        gate = html.escape(str(entry["gate"]))
        for unit, (x_value, y_value) in enumerate(zip(entry["left"], entry["right"])):
            x_value, y_value = _finite(x_value), _finite(y_value)
            if x_value is None or y_value is None:
                skipped += 1
                continue
            # Fractions lie in [0, 1]; clamping only keeps a rounding error inside the frame.
            cx = left + min(1.0, max(0.0, x_value)) * size
            cy = top + (1 - min(1.0, max(0.0, y_value))) * size
            parts.append(f'<circle class="dot" data-gate="{gate}" data-unit="{unit}" cx="{cx:.1f}" cy="{cy:.1f}" '
                         f'r="3.5" fill="{colours[entry["gate"]]}" fill-opacity="0.65">'
                         f'<title>{gate} unit {unit}: left {x_value:.3f}, right {y_value:.3f}</title></circle>')
    # The legend uses squares, so that the plot's circles are exactly its dots.
    legend_x = left + size + 18
    for row, gate in enumerate(dict.fromkeys(entry["gate"] for entry in entries)):
        y = top + 8 + row * 20
        parts.append(f'<rect class="key" x="{legend_x}" y="{y}" width="10" height="10" fill="{colours[gate]}"/>')
        parts.append(f'<text x="{legend_x + 16}" y="{y + 9}" class="legend">{html.escape(str(gate))}</text>')
    if skipped:
        parts.append(f'<text x="{left}" y="{p["height"] - 4}" class="tick">{skipped} dot(s) not drawn: '
                     'not finite</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_cells_html(report: dict, *, excerpt_tokens: int = 1500) -> str:
    """A self-contained HTML page showing a ``textgen cells`` report.

    The excerpt is the first ``excerpt_tokens`` tokens of the held-out half
    (from ``report["split"]``). Tracked features come first in the table and
    the picker, each group in the report's order; the page opens on the first,
    or on the feature a URL hash such as ``#feature=inside%20quotes`` names.
    Raises ``ConfigError`` for a report it cannot draw.
    """
    _check(report, excerpt_tokens)
    threshold = _finite(report["threshold"])
    features = sorted(report["features"], key=lambda feature: not feature["tracked"])  # stable: report order kept
    split = report["split"]
    shown = slice(split, split + excerpt_tokens)
    excerpt = report["tokens"][shown]
    payload_features = []
    for feature in features:
        quantity = feature["best"][0]["quantity"] if feature["best"] else FEATURE_SCALE
        unit_values = [_finite(v) for v in feature["unit_values"]]
        values = [_finite(v) for v in feature["values"]]
        scale = unit_scale(unit_values, quantity)  # over the whole text, not only the excerpt
        payload_features.append({
            "name": feature["name"], "tracked": bool(feature["tracked"]),
            "caption": _caption(feature, threshold),
            "unit": [_hex(token_colour(v, quantity, scale)) for v in unit_values[shown]],
            "feature": _feature_colours(values)[shown],
            "unit_values": [None if v is None else round(v, 4) for v in unit_values[shown]],
            "values": [None if v is None else round(v, 4) for v in values[shown]],
        })
    payload = {"start": split, "tokens": excerpt, "shown": [_display(token) for token in excerpt],
               "features": payload_features, "missing": _hex(PALETTE["missing"])}
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    # Inside a <script> block only "</script" and "<!--" are dangerous; escaping every
    # <, > and & (legal JSON string escapes) rules both out whatever the tokens hold.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

    gates = list(dict.fromkeys(entry["gate"] for entry in report["saturation"]))
    colours = {gate: GATE_COLOURS[index % len(GATE_COLOURS)] for index, gate in enumerate(gates)}
    layers = sorted({entry["layer"] for entry in report["saturation"]})
    plots = "\n".join(saturation_svg(layer, [e for e in report["saturation"] if e["layer"] == layer], colours)
                      for layer in layers) or "<p>This cell has no gates to saturate.</p>"
    tokens = len(report["tokens"])
    meta = (f"{report.get('model') or 'model'} \u00b7 {report['cell']} \u00b7 {report.get('layers', '?')} layer(s) "
            f"\u00d7 {report.get('units', '?')} units \u00b7 {tokens} tokens of {report.get('source', 'text')}; "
            f"units were picked on the first {split} tokens and are judged on the last {tokens - split}, "
            f"of which the excerpt shows the first {len(excerpt)}.")
    options = "\n".join(f'<option value="{index}">{html.escape(str(feature["name"]))}'
                        f'{"" if feature["tracked"] else " (not tracked)"}</option>'
                        for index, feature in enumerate(features))
    parts = {"__CELLS_META__": html.escape(meta),
             "__CELLS_UNTRACKED__": html.escape(_untracked_note(features, threshold)),
             "__CELLS_SUMMARY__": _summary_rows(features), "__CELLS_OPTIONS__": options,
             "__CELLS_SATURATION__": plots, "__CELLS_DATA__": text,
             "__CELLS_CHANCE__": html.escape(f"the largest |r| any unit reaches on the first half with the feature "
                                             f"shifted along the text by 1/{CONTROL_SHIFT} of its length")}
    template = importlib.resources.files(__package__).joinpath(PAGE).read_text(encoding="utf-8")
    # One pass: what replaces one placeholder is never searched for another.
    return _PLACEHOLDER.sub(lambda match: parts[match.group(0)], template)


def write_cells_report(report: CellReport, out_dir, *, overwrite: bool = False) -> dict[str, Path]:
    """Write cells.json and cells.html into ``out_dir``; return their paths by kind.

    ``out_dir`` is created if missing. Existing files of those names are
    replaced only with ``overwrite`` (other files there are never touched);
    otherwise nothing is written. Both are rendered before the first is written.
    """
    if not isinstance(report, CellReport):
        raise ConfigError(f"expected a textgen.lab.cells.CellReport. Received: report={type(report).__name__}")
    out_dir = Path(out_dir)
    paths = check_destination(out_dir, overwrite=overwrite, files=CELLS_FILES)
    data = report.to_dict()
    contents = {"json": json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")}
    contents["html"] = render_cells_html(data).encode("utf-8")
    return write_report_files(out_dir, paths, contents)
