"""The inspection report: HTML, PNG and JSON from a Trace, checked down to the colours a browser draws."""

import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from textgen.errors import ConfigError, ReportError, TextgenError
from textgen.lab.inspect import (PALETTE, check_trace, render_html, render_png, select, token_colour, trace_json,
                                 unit_scale, visible_token, write_report)
from textgen.model_dir import INSPECT_FILES
from textgen.model.trace import QUANTITIES, Trace

# Tokens that would break a page built carelessly: markup, the end of a script
# block, comment openers, quotes, control characters, non-BMP text.
NASTY = ["</script>", "<!--", "<b>bold</b>", "&amp;", '"', "'", "\n", "\t", "\r", "\x00", "\x7f", "",
         "\u2028", "日本", "😀", "</SCRIPT >", "]]>", "${x}", "\\u003c"]
GATES = ("forget", "input", "output")
CELL_QUANTITIES = {"lstm": ("forget", "input", "output", "candidate", "cell", "hidden"),
                   "gru": ("update", "reset", "candidate", "hidden"), "rnn": ("hidden",)}


def make_trace(cell="lstm", tokens=None, layers=2, units=12, generated_from=None, seed=0) -> Trace:
    """A trace with values in each quantity's range; cell states reach beyond 1 to exercise the scaling."""
    rng = np.random.default_rng(seed)
    tokens = list("ROMEO: But soft!") + NASTY if tokens is None else tokens
    steps = len(tokens)
    result = []
    for _ in range(layers):
        layer = {}
        for name in CELL_QUANTITIES[cell]:
            if name in GATES or name in ("update", "reset"):
                layer[name] = rng.uniform(0, 1, (steps, units))
            else:
                layer[name] = rng.uniform(-1, 1, (steps, units)) * (3.0 if name == "cell" else 1.0)
            layer[name] = layer[name].astype(np.float32)
        result.append(layer)
    return Trace(cell, tokens, steps - 5 if generated_from is None else generated_from, result)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def embedded_data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


def test_write_report_writes_the_three_files(tmp_path):
    trace = make_trace()
    paths = write_report(trace, tmp_path / "report")
    assert {kind: path.name for kind, path in paths.items()} == INSPECT_FILES
    page = paths["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    width, height = png_size(paths["png"].read_bytes())
    assert 600 <= width <= 4000 and 300 <= height <= 3000
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(INSPECT_FILES.values())


def test_json_holds_exactly_the_arrays(tmp_path):
    trace = make_trace(units=7)
    data = json.loads(write_report(trace, tmp_path)["json"].read_text(encoding="utf-8"))
    assert data["cell"] == "lstm" and data["tokens"] == trace.tokens
    assert data["generated_from"] == trace.generated_from
    assert len(data["layers"]) == 2
    for stored, layer in zip(data["layers"], trace.layers):
        assert set(stored) == set(layer)
        for name, values in layer.items():
            np.testing.assert_allclose(np.array(stored[name]), values, rtol=0, atol=5e-7)
    assert data == trace.to_dict()


def test_non_finite_values_become_null_and_still_render(tmp_path):
    trace = make_trace(layers=1)
    trace.layers[0]["cell"][2, 3] = np.nan
    trace.layers[0]["cell"][4, 3] = np.inf
    data = trace_json(trace)
    assert data["layers"][0]["cell"][2][3] is None and data["layers"][0]["cell"][4][3] is None
    paths = write_report(trace, tmp_path, quantity="cell", unit=3)
    assert json.loads(paths["json"].read_text())["layers"][0]["cell"][2][3] is None
    assert token_colour(None, "cell") == PALETTE["missing"]


def test_nasty_tokens_stay_data(tmp_path):
    trace = make_trace()
    page = render_html(trace)
    # Exactly two script blocks close: the data and the code. No token opens a comment or markup.
    assert len(re.findall(r"</script", page, re.I)) == 2
    assert "<!--" not in page and "<b>" not in page and "]]>" not in page
    data = embedded_data(page)
    assert data["tokens"] == trace.tokens
    assert data["initial"] == {"layer": 0, "quantity": "cell", "unit": select(trace).unit}


def test_page_is_self_contained(tmp_path):
    page = render_html(make_trace())
    assert "default-src 'none'" in page  # the browser itself refuses any fetch
    for needle in ("http://", "https://", "<link", "@import", "url(", " src=", "@font-face"):
        assert needle not in page, needle


def test_refuses_to_overwrite_and_writes_nothing(tmp_path):
    trace = make_trace()
    (tmp_path / "trace.json").write_text("my notes")
    with pytest.raises(ReportError, match=r"--overwrite.*Received: path='.*trace\.json'$"):
        write_report(trace, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.json"]
    assert (tmp_path / "trace.json").read_text() == "my notes"
    paths = write_report(trace, tmp_path, overwrite=True)
    assert json.loads(paths["json"].read_text())["tokens"] == trace.tokens
    assert issubclass(ReportError, TextgenError)


def test_other_files_in_the_folder_are_left_alone(tmp_path):
    (tmp_path / "keep.txt").write_text("keep")
    write_report(make_trace(), tmp_path)
    write_report(make_trace(seed=1), tmp_path, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportError, match="not a directory"):
        write_report(make_trace(), tmp_path / "file")


@pytest.mark.parametrize("cell, default", [("lstm", "cell"), ("gru", "hidden"), ("rnn", "hidden")])
def test_defaults_pick_a_state_and_the_most_variable_unit(cell, default):
    trace = make_trace(cell=cell, layers=1)
    values = trace.layers[0][default]
    values[:, 5] = np.where(np.arange(len(values)) % 2, 10.0, -10.0)  # unit 5 swings the most
    chosen = select(trace)
    assert (chosen.layer, chosen.quantity, chosen.unit) == (0, default, 5)
    present = [name for name in QUANTITIES if name in CELL_QUANTITIES[cell]]  # in display order
    assert embedded_data(render_html(trace))["quantities"] == [present]


@pytest.mark.parametrize("kwargs, message", [
    (dict(layer=2), "Received: layer=2"),
    (dict(layer=-1), "Received: layer=-1"),
    (dict(layer=True), "Received: layer=True"),
    (dict(quantity="update"), "Received: quantity='update'"),
    (dict(quantity="bogus"), "Received: quantity='bogus'"),
    (dict(unit=12), "Received: unit=12"),
    (dict(unit="3"), "Received: unit='3'"),
])
def test_bad_selections_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        write_report(make_trace(units=12), "/nonexistent/never-written", **kwargs)


def test_malformed_traces_are_refused():
    trace = make_trace()
    trace.layers[1]["cell"] = trace.layers[1]["cell"][:-1]
    with pytest.raises(ConfigError, match="shapes"):
        check_trace(trace)
    with pytest.raises(ConfigError, match="empty"):
        check_trace(Trace("lstm", [], 0, [{}]))


def test_colour_reference_values():
    white, red, blue, purple = PALETTE["white"], PALETTE["positive"], PALETTE["negative"], PALETTE["gate"]
    assert token_colour(0.0, "hidden") == white and token_colour(1.0, "hidden") == red
    assert token_colour(-1.0, "candidate") == blue and token_colour(-7.0, "hidden") == blue
    assert token_colour(3.0, "cell", scale=3.0) == red and token_colour(1.5, "cell", scale=3.0) == (217, 140, 149)
    assert token_colour(0.0, "forget") == white and token_colour(1.0, "input") == purple
    assert token_colour(0.5, "output") == (170, 147, 199)  # 169.5 rounds up, as Math.round does
    assert unit_scale([0.2, -2.5, 1.0], "cell") == 2.5 and unit_scale([0.2, 0.3], "cell") == 1.0
    assert unit_scale([5.0], "forget") == 1.0


def test_png_of_a_long_trace_with_many_units_stays_readable(tmp_path):
    trace = make_trace(tokens=["ab"] * 400, layers=2, units=256, generated_from=300)
    path = render_png(trace, tmp_path / "wide.png", quantity="hidden", unit=255)
    width, height = png_size(path.read_bytes())
    assert width <= 4000 and 400 <= height <= 2500


def test_visible_token_labels():
    assert visible_token("\n") == "\u21b5" and visible_token(" a\t") == "\u2423a\u21e5"
    assert visible_token("\x00") == "\u2400" and visible_token("") == "\u2205"
    assert visible_token("x" * 30) == "x" * 11 + "\u2026"


# --- The page in a real browser -------------------------------------------------------------------

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class TokenSpans(HTMLParser):
    """Collects the token spans of a dumped DOM: index, style, text; and the #text element's data attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.spans, self.view, self._open = {}, {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and attrs.get("id") == "text":
            self.view = {key: value for key, value in attrs.items() if key.startswith("data-")}
        if tag == "span" and "tok" in (attrs.get("class") or "").split():
            self._open = int(attrs["data-t"])
            self.spans[self._open] = {"style": attrs.get("style", ""), "text": ""}

    def handle_data(self, data):
        if self._open is not None:
            self.spans[self._open]["text"] += data

    def handle_endtag(self, tag):
        if tag == "span":
            self._open = None


def dump_doms(page: Path, fragments: list[str], profile_root: Path) -> list[str]:
    """Load the page once per URL fragment in headless Chromium, in parallel; return each rendered DOM."""
    runs = []
    for index, fragment in enumerate(fragments):
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   f"--user-data-dir={profile_root / str(index)}", "--virtual-time-budget=5000", "--dump-dom",
                   f"{page.as_uri()}#{fragment}"]
        runs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={"HOME": str(profile_root), "PATH": "/usr/bin:/bin"}))
    doms = []
    for run in runs:
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0
        doms.append(out)
    return doms


def rendered(dom: str) -> TokenSpans:
    parser = TokenSpans()
    parser.feed(dom)
    return parser


def background(style: str) -> tuple[int, int, int]:
    match = re.search(r"background-color:\s*rgb\((\d+),\s*(\d+),\s*(\d+)\)", style)
    assert match, style
    return tuple(int(x) for x in match.groups())


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")
def test_browser_draws_the_colours_the_hash_and_pickers_select(tmp_path):
    trace = make_trace(layers=2, units=12)
    page = write_report(trace, tmp_path / "report")["html"]
    data = trace_json(trace)  # the values the page holds, rounded as it holds them
    fragments = ["layer=1&quantity=forget&unit=7", "layer=1&quantity=forget&unit=3",
                 "layer=0&quantity=cell&unit=2", "unit=999"]
    doms = [rendered(dom) for dom in dump_doms(page, fragments, tmp_path / "profiles")]

    for fragment, dom in zip(fragments[:3], doms):
        params = dict(item.split("=") for item in fragment.split("&"))
        assert dom.view == {"data-layer": params["layer"], "data-quantity": params["quantity"],
                            "data-unit": params["unit"]}
        layer, quantity, unit = int(params["layer"]), params["quantity"], int(params["unit"])
        column = [row[unit] for row in data["layers"][layer][quantity]]
        scale = unit_scale(column, quantity)
        assert sorted(dom.spans) == list(range(len(trace.tokens)))  # every token rendered
        drawn = [background(dom.spans[t]["style"]) for t in range(len(trace.tokens))]
        assert drawn == [token_colour(value, quantity, scale) for value in column]
    assert scale > 1  # the cell view exercised the stretched scale

    # The unit picker changes the colouring; a unit out of range leaves the default selection.
    assert [s["style"] for s in doms[0].spans.values()] != [s["style"] for s in doms[1].spans.values()]
    default = select(trace)
    assert doms[3].view == {"data-layer": "0", "data-quantity": default.quantity, "data-unit": str(default.unit)}
    # Token text arrives as text: markup shows literally, control characters as symbols.
    texts = [doms[0].spans[t]["text"] for t in range(len(trace.tokens))]
    assert texts[trace.tokens.index("</script>")] == "</script>"
    assert texts[trace.tokens.index("<b>bold</b>")] == "<b>bold</b>"
    assert texts[trace.tokens.index("\n")] == "\u21b5\n" and texts[trace.tokens.index("\x00")] == "\u2400"


# --- textgen inspect, end to end ------------------------------------------------------------------


def test_inspect_command_end_to_end(tiny_model_dir, tiny_model, tmp_path):
    from click.testing import CliRunner

    from textgen.cli.main import cli

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    runner = CliRunner()
    args = ["inspect", str(model_dir), "--prompt", "ROMEO:", "--continue", "10", "--seed", "3"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = model_dir / "inspect"  # the default --out, beside the model's own files
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) == len("ROMEO:") + 10 + 1
    assert "traced 16 tokens (6 given, 10 generated)" in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("wrote ")] == [
        f"wrote {report / name}" for name in INSPECT_FILES.values()]
    data = json.loads((report / "trace.json").read_text(encoding="utf-8"))
    assert data["cell"] == "lstm" and data["generated_from"] == 6 and "".join(data["tokens"]) + "\n" == result.stdout
    assert len(data["layers"]) == 2 and np.array(data["layers"][1]["forget"]).shape == (16, 16)
    assert png_size((report / "trace.png").read_bytes())[0] >= 600
    assert embedded_data((report / "trace.html").read_text(encoding="utf-8"))["tokens"] == data["tokens"]

    # The model still loads with a report inside its folder.
    import textgen
    textgen.load(model_dir)

    # A second run refuses to replace the report, then replaces it when told; the same seed gives the same trace.
    before = {name: (report / name).read_bytes() for name in INSPECT_FILES.values()}
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 1 and "--overwrite" in refused.stderr
    assert [line for line in refused.stderr.splitlines() if line.startswith("Error")] == [
        refused.stderr.strip().splitlines()[-1]]
    assert {name: (report / name).read_bytes() for name in INSPECT_FILES.values()} == before
    again = runner.invoke(cli, args + ["--overwrite", "--layer", "1", "--quantity", "forget", "--unit", "3"])
    assert again.exit_code == 0, again.output
    assert "showing layer 1, forget, unit 3" in again.stderr
    assert (report / "trace.json").read_bytes() == before["trace.json"]
    assert embedded_data((report / "trace.html").read_text())["initial"] == {"layer": 1, "quantity": "forget",
                                                                               "unit": 3}

    # Prompt only, elsewhere: the JSON holds exactly what TextModel.trace returns.
    out = tmp_path / "elsewhere"
    alone = runner.invoke(cli, ["inspect", str(model_dir), "-p", "JULIET:", "--out", str(out)])
    assert alone.exit_code == 0, alone.output
    assert json.loads((out / "trace.json").read_text()) == tiny_model.trace("JULIET:").to_dict()


@pytest.mark.parametrize("extra, code, message", [
    (["--quantity", "update"], 2, "quantity='update'"),
    (["--quantity", "bogus"], 2, "bogus"),
    (["--layer", "7"], 2, "layer=7"),
    (["--unit", "16"], 2, "unit=16"),
    (["--continue", "-1"], 2, "continuation"),
])
def test_inspect_command_errors_are_one_line(tiny_model_dir, tmp_path, extra, code, message):
    from click.testing import CliRunner

    from textgen.cli.main import cli

    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["inspect", str(tiny_model_dir), "-p", "O", "--out", str(out), *extra])
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error")]) == 1
    assert not out.exists()
