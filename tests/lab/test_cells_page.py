"""The page of ``textgen cells``: self-contained, token text kept as text, and checked in a real browser."""

import json
import math
import re
import time
from html.parser import HTMLParser

import numpy as np
import pytest

from browser import CHROMIUM, Browser
from textgen.errors import ConfigError
from textgen.lab.cells_page import render_cells_html
from textgen.lab.inspect import PALETTE, token_colour, unit_scale

# Tokens that would break a page built carelessly: markup, the end of a script
# block, comment openers, quotes, ampersands, control characters, a placeholder's name.
NASTY = ["</script>", "<!--", "<b>", "&amp;", "&", '"', "'", "\n", "\t", "", "\x00", "</SCRIPT >", "]]>",
         "__CELLS_DATA__", "\\u003c", "\u2028", "😀"]
GATES = ("input", "forget", "output")


def make_report(layers=2, units=6, gates=GATES, split=None, seed=0) -> dict:
    """A report of the shape ``textgen.lab.cells`` writes, made up: two tracked features and one not,
    listed untracked first, with the nasty tokens in the held-out half."""
    rng = np.random.default_rng(seed)
    text = list('say "hi" (to [me])\nand "so" on\n') * 3
    tokens = text + NASTY + text
    steps = len(tokens)
    split = len(text) if split is None else split
    quotes, depth, position = [], [], []
    inside, level, column = 0.0, 0, 0
    for token in tokens:
        if token == '"':
            inside = 1.0 - inside
        level += (token in "([") - (token in ")]") if len(token) == 1 else 0
        column = 0 if token == "\n" else column + 1
        quotes.append(inside)
        depth.append(float(max(level, 0)))
        position.append(float(column))
    unit_quotes = [(2 * q - 1) * 2.5 + float(rng.normal(0, 0.3)) for q in quotes]  # a cell state beyond +-1
    unit_position = [min(1.0, p / 12) for p in position]  # a forget gate, in [0, 1]
    unit_depth = [float(v) for v in rng.uniform(-1, 1, steps)]

    def feature(name, description, kind, values, layer, quantity, unit, r_found, r_held_out, unit_values):
        return {"name": name, "description": description, "kind": kind, "values": values,
                "best": [{"layer": layer, "quantity": quantity, "unit": unit, "r_found": r_found,
                          "r_held_out": r_held_out},
                         {"layer": 0, "quantity": "hidden", "unit": 0, "r_found": 0.1, "r_held_out": 0.05}],
                "chance": 0.08, "tracked": abs(r_held_out) >= 0.5, "unit_values": unit_values}

    saturation = []
    for layer in range(layers):
        for gate in gates:
            left = rng.uniform(0, 1, units)
            saturation.append({"layer": layer, "gate": gate, "left": [float(v) for v in left],
                               "right": [float(v) for v in rng.uniform(0, 1 - left)]})
    return {"model": "tiny", "cell": "lstm", "layers": layers, "units": units, "source": "made-up text",
            "tokens": tokens, "split": split, "threshold": 0.5,
            "features": [feature("bracket depth", "how many ( and [ are open", "count", depth,
                                 0, "hidden", 5, 0.31, 0.2, unit_depth),
                         feature("inside quotes", "between double quotes", "binary", quotes,
                                 1, "cell", 3, 0.95, 0.93, unit_quotes),
                         feature("line position", "tokens since the line began", "count", position,
                                 0, "forget", 1, 0.7, -0.66, unit_position)],
            "saturation": saturation}


def embedded_data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="cells-data">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


class Summary(HTMLParser):
    """The summary table's rows (cell texts) and the saturation plots' circles, from the page as written."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows, self.circles, self._cell, self._layer = [], [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-feature" in attrs:
            self.rows.append([])
        if tag == "td" and self.rows:
            self._cell = ""
        if tag == "svg":
            self._layer = int(attrs["data-layer"])
        if tag == "circle":
            self.circles.append((self._layer, attrs["data-gate"], int(attrs["data-unit"])))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None


def parsed(page: str) -> Summary:
    parser = Summary()
    parser.feed(page)
    return parser


def test_page_is_self_contained():
    page = render_cells_html(make_report())
    assert page.startswith("<!DOCTYPE html>") and "default-src 'none'" in page
    for needle in ("http://", "https://", "<link", "@import", "url(", " src=", "@font-face"):
        assert needle not in page, needle
    assert not re.search(r"__CELLS_[A-Z]+__", page.split('id="cells-data">')[0])  # every placeholder filled


def test_nasty_tokens_and_names_stay_text():
    report = make_report()
    report["features"][1]["name"] = '<b>quotes</b> & "co"'
    report["features"][1]["description"] = "</script><script>alert(1)</script>"
    report["source"] = "<i>file</i>"
    page = render_cells_html(report)
    # Exactly two script blocks close: the data and the code. No token or name opens markup.
    assert len(re.findall(r"</script", page, re.I)) == 2
    assert "<!--" not in page and "<b>" not in page and "<i>" not in page and "]]>" not in page
    data = embedded_data(page)
    split = report["split"]
    assert data["tokens"] == report["tokens"][split:] and data["start"] == split
    assert data["tokens"][:len(NASTY)] == NASTY
    shown = dict(zip(data["tokens"], data["shown"]))
    assert shown["\n"] == "\u21b5\n" and shown["\t"] == "\u21e5\t" and shown[""] == "\u2205"
    assert shown["\x00"] == "\u2400" and shown["</script>"] == "</script>"
    rows = parsed(page).rows
    assert ['<b>quotes</b> & "co"', "</script><script>alert(1)</script>"] == rows[0][:2]
    assert "&lt;i&gt;file&lt;/i&gt;" in page


def test_summary_puts_tracked_features_first_and_names_the_untracked():
    report = make_report()
    page = render_cells_html(report)
    rows = parsed(page).rows
    assert [row[0] for row in rows] == ["inside quotes", "line position", "bracket depth"]
    assert rows[0] == ["inside quotes", "between double quotes", "layer 1 cell #3", "0.950", "0.930", "0.080", "yes"]
    assert rows[1][2:5] == ["layer 0 forget #1", "0.700", "-0.660"] and rows[2][6] == "no"
    assert "No unit tracks bracket depth: no held-out |r| reaches 0.50." in page
    assert [f["name"] for f in embedded_data(page)["features"]] == [row[0] for row in rows]

    for feature in report["features"]:
        feature["tracked"] = True
    assert "Every feature has a unit that tracks it" in render_cells_html(report)


def test_excerpt_is_the_start_of_the_held_out_half():
    report = make_report()
    data = embedded_data(render_cells_html(report, excerpt_tokens=5))
    split = report["split"]
    assert data["tokens"] == report["tokens"][split:split + 5]
    for feature in data["features"]:
        assert len(feature["unit"]) == len(feature["feature"]) == len(feature["values"]) == 5
    quotes = data["features"][0]
    source = report["features"][1]
    scale = unit_scale(source["unit_values"], "cell")
    assert scale > 1  # colours stretch to the unit's largest |value| over the whole text, as inspect's do
    assert quotes["unit"] == ["#{:02x}{:02x}{:02x}".format(*token_colour(v, "cell", scale))
                              for v in source["unit_values"][split:split + 5]]


def test_non_finite_values_render():
    report = make_report()
    split = report["split"]
    quotes = report["features"][1]
    quotes["unit_values"][split] = math.nan
    quotes["unit_values"][split + 1] = None
    quotes["values"][split + 2] = math.inf
    quotes["best"][0]["r_found"] = math.nan
    report["features"][2]["best"][0]["r_held_out"] = None
    report["features"][2]["chance"] = math.inf
    report["saturation"][0]["left"][2] = math.nan
    page = render_cells_html(report)
    data = embedded_data(page)  # strict JSON: no NaN slipped through
    missing = "#{:02x}{:02x}{:02x}".format(*PALETTE["missing"])
    quotes = data["features"][0]
    assert quotes["unit"][:2] == [missing, missing] and quotes["unit_values"][:2] == [None, None]
    assert quotes["feature"][2] == missing and quotes["values"][2] is None
    rows = parsed(page).rows
    assert rows[0][3] == "n/a" and rows[1][4:6] == ["n/a", "n/a"]
    assert "1 dot(s) not drawn: not finite" in page
    assert len(parsed(page).circles) == 2 * len(GATES) * 6 - 1


def test_saturation_plots_one_dot_per_unit_per_gate():
    page = render_cells_html(make_report(layers=3, units=5, gates=("update", "reset")))
    circles = parsed(page).circles
    assert sorted(circles) == sorted((layer, gate, unit) for layer in range(3) for gate in ("update", "reset")
                                     for unit in range(5))
    assert page.count('<svg class="saturation"') == 3
    assert "fraction left-saturated (&lt; 0.1)" in page and "fraction right-saturated (&gt; 0.9)" in page
    no_gates = make_report()
    no_gates["saturation"] = []
    assert "no gates" in render_cells_html(no_gates)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(split=10_000), "Received: split=10000"),
    (lambda r: r.pop("features"), "lacks features"),
    (lambda r: r["features"][0]["values"].pop(), "one value and one unit value per token"),
    (lambda r: r["saturation"][0]["right"].pop(), "saturation entry 0"),
])
def test_malformed_reports_are_refused(change, message):
    report = make_report()
    change(report)
    with pytest.raises(ConfigError, match=re.escape(message)):
        render_cells_html(report)
    with pytest.raises(ConfigError, match="excerpt_tokens"):
        render_cells_html(make_report(), excerpt_tokens=0)


# --- The page in a real browser -------------------------------------------------------------------

def rgb(colour) -> str:
    return "rgb({}, {}, {})".format(*colour)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")
def test_browser_shows_the_table_the_selected_feature_and_the_gates(tmp_path):
    report = make_report(layers=2, units=7)
    page = tmp_path / "cells.html"
    page.write_text(render_cells_html(report), encoding="utf-8")
    split = report["split"]
    by_name = {feature["name"]: feature for feature in report["features"]}

    def expected_units(name):
        best = by_name[name]["best"][0]
        values = by_name[name]["unit_values"]
        scale = unit_scale(values, best["quantity"])
        return [rgb(token_colour(v, best["quantity"], scale)) for v in values[split:]]

    browser = Browser(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        view = """(() => ({
            feature: document.getElementById("text").dataset.feature,
            picked: document.getElementById("feature").value,
            current: Array.from(document.querySelectorAll("#summary tbody tr.current"), r => r.dataset.feature),
            backgrounds: Array.from(document.querySelectorAll("#text .tok"), s => s.style.backgroundColor),
            bars: Array.from(document.querySelectorAll("#text .tok"), s => s.style.borderBottomColor),
            texts: Array.from(document.querySelectorAll("#text .tok"), s => s.textContent),
            caption: document.getElementById("caption").textContent}))()"""

        first = browser.evaluate(view)
        assert browser.evaluate("document.querySelectorAll('#summary tbody tr').length") == 3
        assert first["feature"] == first["picked"] == "0" and first["current"] == ["0"]
        assert first["backgrounds"] == expected_units("inside quotes")
        white, purple = rgb(PALETTE["white"]), rgb(PALETTE["gate"])
        assert first["bars"] == [purple if v else white for v in by_name["inside quotes"]["values"][split:]]
        assert first["texts"][:len(NASTY)] == ["</script>", "<!--", "<b>", "&amp;", "&", '"', "'", "\u21b5\n",
                                               "\u21e5\t", "\u2205", "\u2400", "</SCRIPT >", "]]>",
                                               "__CELLS_DATA__", "\\u003c", "\u2028", "😀"]
        assert browser.evaluate("document.querySelectorAll('#text b, #text script').length") == 0

        # A click on the untracked row selects it and changes the colours; the caption says it is not tracked.
        browser.evaluate("document.querySelector('#summary tbody tr[data-feature=\"2\"]').click()")
        clicked = browser.evaluate(view)
        assert clicked["feature"] == clicked["picked"] == "2" and clicked["current"] == ["2"]
        assert clicked["backgrounds"] == expected_units("bracket depth") != first["backgrounds"]
        assert "No unit tracks this feature" in clicked["caption"]

        # The picker does the same; the view picker puts the feature itself in the background.
        browser.evaluate("""(() => { const p = document.getElementById("feature"); p.value = "1";
                                     p.dispatchEvent(new Event("change")); })()""")
        picked = browser.evaluate(view)
        assert picked["feature"] == "1" and picked["backgrounds"] == expected_units("line position")
        assert "runs opposite" in picked["caption"]
        browser.evaluate("""(() => { const p = document.getElementById("view"); p.value = "feature";
                                     p.dispatchEvent(new Event("change")); })()""")
        assert browser.evaluate(view)["backgrounds"] == picked["bars"]

        # A URL hash names a feature.
        browser.evaluate("location.hash = '#feature=' + encodeURIComponent('bracket depth')")
        deadline = time.monotonic() + 10  # hashchange fires after the evaluation returns
        while browser.evaluate(view)["feature"] != "2":
            assert time.monotonic() < deadline, "the URL hash did not select the feature"
            time.sleep(0.02)

        # One circle per unit per gate in each layer's plot, and no other circles.
        counts = browser.evaluate("""(() => Array.from(document.querySelectorAll("svg.saturation"), svg => ({
            layer: svg.dataset.layer, all: svg.querySelectorAll("circle").length,
            gates: Object.fromEntries(["input", "forget", "output"].map(
                g => [g, svg.querySelectorAll('circle[data-gate="' + g + '"]').length]))})))()""")
        assert counts == [{"layer": str(layer), "all": 3 * 7, "gates": {gate: 7 for gate in GATES}}
                          for layer in range(2)]
        assert browser.errors() == []
    finally:
        browser.close()
