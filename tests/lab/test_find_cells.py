"""Finding the cells that mean something: the search on made-up traces, the report, and on trained models."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from textgen import model_dir
from textgen.cli.main import cli
from textgen.config import CELLS_MAX_CHARACTERS
from textgen.errors import ConfigError, ReportError
from textgen.lab.cells import (CONTROL_SHIFT, LEFT_SATURATED, RIGHT_SATURATED, TRACKED_R, CellReport,
                               find_cells, gate_saturation, render_table, text_to_read)
from textgen.lab.cells_page import write_cells_report
from textgen.lab.features import Feature, get_feature
from textgen.model.cells import CELL_TYPES
from textgen.model.trace import GATES, Trace
from textgen.model_dir import CELLS_FILES

from conftest import TINY_TEXT

QUANTITIES_OF = {"lstm": ("forget", "input", "output", "candidate", "cell", "hidden"),
                 "gru": ("update", "reset", "candidate", "hidden"), "rnn": ("hidden",)}
LINES = ['x = "a (b) c"  # note', "def f(y):", '    return y["k"]', "# only a comment", "z = [1, (2, 3)]",
         "s = '''doc\nit's here'''", "print(f(x), 'done')"]


def code_text(lines=300, seed=0) -> str:
    """Python-looking lines in a random order, so the text has no period a shift could line up with."""
    rng = np.random.default_rng(seed)
    return "\n".join(LINES[i] for i in rng.integers(0, len(LINES), lines)) + "\n"


def make_trace(tokens, cell="lstm", layers=2, units=24, seed=0) -> Trace:
    """Random values for every quantity the cell records: gates in [0, 1], the others in [-1, 1]."""
    rng = np.random.default_rng(seed)
    steps = len(tokens)
    result = [{name: (rng.uniform(0, 1, (steps, units)) if name in GATES else rng.uniform(-1, 1, (steps, units)))
               .astype(np.float32) for name in QUANTITIES_OF[cell]} for _ in range(layers)]
    return Trace(cell, list(tokens), steps, result)


def pearson(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64), np.asarray(b, np.float64))[0, 1])


# --- the search, on made-up traces ---------------------------------------------------------------


def test_a_planted_unit_is_found_and_a_permuted_feature_is_not_tracked():
    tokens = list(code_text(lines=120))[:2000]
    steps, split = len(tokens), len(tokens) // 2
    in_string = get_feature("in_string").values(tokens)
    trace = make_trace(tokens)
    rng = np.random.default_rng(1)
    trace.layers[1]["cell"][:, 17] = in_string + rng.normal(0, 0.1, steps)
    permuted = rng.permutation(in_string)
    shuffled = Feature("shuffled", "in_string in a random order", "binary", lambda _: permuted)

    report = find_cells(trace, ["in_string", shuffled], top=4, model="made up", source="code_text")
    assert report.split == split and report.threshold == TRACKED_R and report.tracked == ["in_string"]
    found, control = report.features
    lead = found.best[0]
    assert (lead.layer, lead.quantity, lead.unit) == (1, "cell", 17)
    assert lead.r_found > 0.95 and lead.r_held_out > 0.95 and found.tracked
    assert np.array_equal(found.unit_values, trace.layers[1]["cell"][:, 17].astype(np.float64))
    assert np.array_equal(found.values, in_string)
    assert not control.tracked and abs(control.best[0].r_held_out) < TRACKED_R

    # Every r is the Pearson correlation on its half, the best come first, and the chance level is the best
    # |r| of the feature shifted by a quarter of the text.
    for feature, values in ((found, in_string), (control, permuted)):
        assert len(feature.best) == 4
        assert [abs(m.r_found) for m in feature.best] == sorted((abs(m.r_found) for m in feature.best), reverse=True)
        for match in feature.best:
            unit = trace.layers[match.layer][match.quantity][:, match.unit]
            assert match.r_found == pytest.approx(pearson(values[:split], unit[:split]), abs=1e-9)
            assert match.r_held_out == pytest.approx(pearson(values[split:], unit[split:]), abs=1e-9)
        shifted = np.roll(values, steps // CONTROL_SHIFT)[:split]
        chance = max(abs(pearson(shifted, layer[name][:split, u])) for layer in trace.layers for name in layer
                     for u in range(24))
        assert feature.chance == pytest.approx(chance, abs=1e-9)


PROSE = ("It was a bright cold day in April, and the clocks were striking thirteen.\n"
         "Winston Smith, his chin nuzzled into his breast in an effort to escape the vile wind,\n"
         "slipped quickly through the glass doors of Victory Mansions, though not quickly enough\n"
         "to prevent a swirl of gritty dust from entering along with him. The hallway smelt of\n"
         "boiled cabbage and old rag mats. At one end of it a coloured poster, too large for\n"
         "indoor display, had been tacked to the wall.\n")


def space_unit_model():
    """A real char-level RNN whose layer-0 unit 0 is tanh(6) (0.99999) after whitespace and exactly 0 otherwise.

    h_t = tanh(x_t W + h_(t-1) U + b) (textgen.model.cells): only whitespace tokens have a 1 in embedding
    dimension 0, unit 0's column of W reads only that dimension (weight 6), and its column of U and its bias are 0.
    Every other weight keeps its random initialisation.
    """
    from textgen.backend import keras
    from textgen.model.network import build_model, named_weights
    from textgen.model.settings import ModelConfig
    from textgen.text_model import TextModel
    from textgen.tokenization.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.train([PROSE], level="char")
    config = ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, units=5, embedding_dim=4, cell="rnn")
    keras.utils.set_random_seed(0)
    model = build_model(config)
    weights = {name: variable.numpy() for name, variable in named_weights(model, config).items()}
    weights["embedding/embeddings"][:, 0] = [float(token[-1:].isspace()) for token in tokenizer.token_strings()]
    weights["rnn_0/kernel"][:, 0] = [6.0, 0.0, 0.0, 0.0]
    weights["rnn_0/recurrent_kernel"][:, 0] = 0.0
    weights["rnn_0/bias"][0] = 0.0
    for name, variable in named_weights(model, config).items():
        variable.assign(weights[name])
    return TextModel(model, config, tokenizer)


def test_a_unit_built_to_follow_space_in_a_real_model_is_found_and_a_shuffled_control_is_not():
    model = space_unit_model()
    trace = model.trace(PROSE)
    assert "".join(trace.tokens) == PROSE
    space = get_feature("space").values(trace.tokens)
    assert 0.1 < space.mean() < 0.3
    unit = trace.layers[0]["hidden"][:, 0]
    assert np.allclose(unit, np.tanh(6.0) * space, atol=1e-6)  # the unit is what it was built to be
    permuted = np.random.default_rng(5).permutation(space)
    shuffled = Feature("shuffled_space", "space in a random order", "binary", lambda _: permuted)

    report = find_cells(trace, ["space", shuffled], top=3)
    assert report.tracked == ["space"]
    found, control = report.features
    lead = found.best[0]
    assert (lead.layer, lead.quantity, lead.unit) == (0, "hidden", 0)
    assert lead.r_found > 0.99 and lead.r_held_out > 0.99 and found.tracked and found.chance < 0.5
    assert not control.tracked and abs(control.best[0].r_held_out) < TRACKED_R


def test_a_negative_unit_tracks_but_one_that_flips_sign_on_the_held_out_half_does_not():
    tokens = list(code_text(lines=60, seed=2))
    split = len(tokens) // 2
    depth = get_feature("bracket_depth").values(tokens)
    trace = make_trace(tokens, cell="gru", layers=1)
    trace.layers[0]["hidden"][:, 3] = -depth / 3
    assert find_cells(trace, ["bracket_depth"]).features[0].tracked
    flipped = np.concatenate([depth[:split], -depth[split:]]) / 3
    trace.layers[0]["hidden"][:, 3] = flipped
    feature = find_cells(trace, ["bracket_depth"]).features[0]
    assert feature.best[0].unit == 3 and feature.best[0].r_held_out < -0.9 and not feature.tracked


def test_constant_units_and_features_give_zero_never_nan():
    tokens = list("abcdefghij" * 5)
    trace = make_trace(tokens, cell="rnn", layers=1, units=3)
    trace.layers[0]["hidden"][:] = 0.25  # every unit constant
    report = find_cells(trace, ["in_string", "vowel"], top=3)
    for feature in report.features:
        assert [m.r_found for m in feature.best] == [0.0] * 3 and feature.chance == 0.0 and not feature.tracked
        assert [m.r_held_out for m in feature.best] == [0.0] * 3
    assert "none (feature constant)" in render_table(report).splitlines()[1]  # in_string: no string here

    # A value that is not finite counts as 0 in the search and is null in the JSON.
    trace.layers[0]["hidden"][:, 1] = get_feature("vowel").values(tokens)
    trace.layers[0]["hidden"][7, 1] = np.nan
    vowel = find_cells(trace, ["vowel"]).features[0]
    assert vowel.best[0].unit == 1 and np.isfinite(vowel.best[0].r_found) and vowel.tracked
    data = find_cells(trace, ["vowel"]).to_dict()
    assert data["features"][0]["unit_values"][7] is None and json.dumps(data, allow_nan=False)


def test_saturation_is_the_share_of_tokens_past_each_threshold():
    tokens = list(code_text(lines=10))
    for cell, gates in (("lstm", ["forget", "input", "output"]), ("gru", ["update", "reset"]), ("rnn", [])):
        trace = make_trace(tokens, cell=cell, layers=2)
        saturation = gate_saturation(trace)
        assert [(s.layer, s.gate) for s in saturation] == [(layer, gate) for layer in (0, 1) for gate in gates]
        for entry in saturation:
            values = trace.layers[entry.layer][entry.gate]
            assert np.array_equal(entry.left, np.mean(values < LEFT_SATURATED, axis=0))
            assert np.array_equal(entry.right, np.mean(values > RIGHT_SATURATED, axis=0))
            assert entry.left.shape == (24,) and 0 < entry.left.mean() < 0.2


def test_the_report_as_json_has_exactly_the_documented_shape():
    tokens = list(code_text(lines=8))
    trace = make_trace(tokens, units=5)
    trace.layers[0]["forget"][2, 0] = np.inf
    report = find_cells(trace, top=2, model="m", source="eight lines")
    data = report.to_dict()
    assert list(data) == ["model", "cell", "layers", "units", "source", "tokens", "split", "threshold", "features",
                          "saturation"]
    assert (data["model"], data["cell"], data["layers"], data["units"], data["source"]) == ("m", "lstm", 2, 5,
                                                                                          "eight lines")
    assert data["tokens"] == tokens and data["split"] == len(tokens) // 2 and data["threshold"] == 0.5
    assert len(data["features"]) == 13
    for feature in data["features"]:
        assert list(feature) == ["name", "description", "kind", "values", "best", "chance", "tracked", "unit_values"]
        assert len(feature["values"]) == len(feature["unit_values"]) == len(tokens)
        assert isinstance(feature["tracked"], bool) and isinstance(feature["chance"], float)
        assert len(feature["best"]) == 2
        for match in feature["best"]:
            assert list(match) == ["layer", "quantity", "unit", "r_found", "r_held_out"]
            assert isinstance(match["unit"], int) and match["r_found"] == round(match["r_found"], 6)
    assert [(s["layer"], s["gate"]) for s in data["saturation"]] == [(l, g) for l in (0, 1)
                                                                     for g in ("forget", "input", "output")]
    assert all(list(s) == ["layer", "gate", "left", "right"] and len(s["left"]) == 5 for s in data["saturation"])
    assert json.loads(json.dumps(data, allow_nan=False)) == data


@pytest.mark.parametrize("kwargs, message", [
    (dict(top=0), r"Received: top=0$"),
    (dict(top=True), r"Received: top=True$"),
    (dict(features=["quotes"]), r"Received: feature='quotes'$"),
])
def test_bad_requests_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        find_cells(make_trace(list(code_text(lines=4))), **kwargs)


def test_too_short_a_text_and_a_trace_that_is_none_are_refused():
    with pytest.raises(ConfigError, match=r"at least 20 tokens.*Received: tokens=19$"):
        find_cells(make_trace(list("x" * 19)))
    with pytest.raises(ConfigError, match=r"Received: trace=str$"):
        find_cells("trace")


def test_the_table_names_units_and_verdicts():
    tokens = list(code_text(lines=40))
    trace = make_trace(tokens)
    trace.layers[1]["cell"][:, 17] = get_feature("in_comment").values(tokens)
    lines = render_table(find_cells(trace, ["in_comment", "vowel"])).splitlines()
    assert lines[0].split() == ["feature", "best", "unit", "r", "found", "r", "held-out", "chance", "tracked"]
    assert lines[1].startswith("in_comment") and "layer 1 cell #17" in lines[1] and lines[1].endswith("yes")
    assert lines[2].startswith("vowel") and lines[2].endswith("no")
    assert lines[3].startswith("1 of 2 features tracked")


# --- writing the report ---------------------------------------------------------------------------


def test_write_cells_report_writes_json_and_html_and_refuses_to_overwrite(tmp_path):
    report = find_cells(make_trace(list(code_text(lines=6))), top=1)
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    paths = write_cells_report(report, out)
    assert paths == {kind: out / name for kind, name in CELLS_FILES.items()}
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == report.to_dict()
    assert paths["html"].read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    before = {path: path.read_bytes() for path in paths.values()}
    with pytest.raises(ReportError, match="--overwrite"):
        write_cells_report(report, out)
    assert {path: path.read_bytes() for path in paths.values()} == before
    write_cells_report(report, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportError, match="not a directory"):
        write_cells_report(report, tmp_path / "file")
    with pytest.raises(ConfigError, match=r"Received: report=dict$"):
        write_cells_report(report.to_dict(), tmp_path / "other")


def test_a_new_model_takes_its_old_cells_report_with_it(tmp_path):
    report = tmp_path / model_dir.CELLS_DIR
    report.mkdir()
    for name in CELLS_FILES.values():
        (report / name).write_text("old")
    (report / "notes.txt").write_text("mine")
    model_dir._move_derived(tmp_path, tmp_path / "gone")
    assert sorted(p.name for p in report.iterdir()) == ["notes.txt"]
    assert model_dir.CELLS_DIR in model_dir.DERIVED


# --- which text is read ---------------------------------------------------------------------------


def test_the_text_read_is_given_or_a_corpus_cut_to_length(tmp_path):
    assert text_to_read("abcdef", characters=4) == ("abcd", "given text, characters 0-4")
    corpus = tmp_path / "c.txt"
    corpus.write_text("é" * 3000, encoding="utf-8")
    text, source = text_to_read(corpus=str(corpus), characters=2500)
    assert text == "é" * 2500 and source == f"corpus {corpus}, characters 0-2500"
    with pytest.raises(ConfigError, match=r"not both\. Received: corpus='python'$"):
        text_to_read("x", corpus="python")
    with pytest.raises(ConfigError, match=rf"between 1 and {CELLS_MAX_CHARACTERS}\. Received: characters=20001$"):
        text_to_read("x", characters=CELLS_MAX_CHARACTERS + 1)
    with pytest.raises(ConfigError, match=r"Received: text=bytes$"):
        text_to_read(b"x")


def test_the_training_corpus_is_read_only_when_it_is_here(tmp_path, monkeypatch):
    corpus = tmp_path / "trained.txt"
    corpus.write_text("To be, or not to be\n" * 10, encoding="utf-8")
    from textgen.files import file_sha256

    record = {"description": str(corpus), "bytes": corpus.stat().st_size, "sha256": file_sha256(corpus)}
    text, source = text_to_read(characters=30, trained_on=record)
    assert text == ("To be, or not to be\n" * 2)[:30]
    assert source == f"corpus {corpus} (the corpus the model was trained on), characters 0-30"

    # A path whose bytes changed is not the corpus; nor is a path that is gone, or a record of several inputs.
    for changed in ({**record, "sha256": "0" * 64}, {**record, "description": str(tmp_path / "gone.txt")},
                    {**record, "description": "2 files"}):
        with pytest.raises(ConfigError, match=r"cannot be read here.*Received: corpus=None$"):
            text_to_read(trained_on=changed)
    with pytest.raises(ConfigError, match=r"does not record the corpus.*Received: corpus=None$"):
        text_to_read(trained_on={})

    # A named corpus: python is always here (its bytes may differ from another Python's); tinyshakespeare only
    # once downloaded, and it is never downloaded for this.
    monkeypatch.chdir(tmp_path)
    text, source = text_to_read(characters=50, trained_on={"description": "python (580 files)", "sha256": "0" * 64})
    assert len(text) == 50 and source == ("corpus python (not the copy the model was trained on: its bytes differ), "
                                          "characters 0-50")
    _, shipped = model_dir.read_manifest("shakespeare")
    with pytest.raises(ConfigError, match=r"\(tinyshakespeare\) cannot be read here without a download"):
        text_to_read(trained_on=shipped["corpus"])


# --- on trained models, in Python and on the command line ------------------------------------------


def test_find_cells_of_a_trained_model_reads_its_own_corpus(tiny_model, tiny_corpus):
    report = tiny_model.find_cells(characters=300, top=2)
    assert isinstance(report, CellReport) and "".join(report.tokens) == TINY_TEXT[:300]
    assert report.source == f"corpus {tiny_corpus} (the corpus the model was trained on), characters 0-300"
    assert report.model == str(tiny_model.path) and (report.cell, report.layers, report.units) == ("lstm", 2, 16)
    assert all(len(feature.best) == 2 for feature in report.features)
    given = tiny_model.find_cells("ROMEO: " * 10, top=1)
    assert given.source == "given text, characters 0-70" and len(given.tokens) == 70
    with pytest.raises(ConfigError, match=r"Received: top=51$"):
        tiny_model.find_cells("ROMEO: " * 10, top=51)


TEXT = ["JULIET:", "O", "Romeo,", "Romeo,", "wherefore", "art", "thou", "Romeo?"]  # characters the models know
EXPECTED_GATES = {"lstm": ["forget", "input", "output"], "peephole": ["forget", "input", "output"],
                  "cifg": ["forget", "input", "output"], "gru": ["update", "reset"], "rnn": []}


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_cells_command_for_every_cell(cell, tiny_model_dir, tiny_corpus, tmp_path):
    runner = CliRunner()
    if cell == "lstm":
        model = tmp_path / "lstm"
        shutil.copytree(tiny_model_dir, model)
    else:
        model = tmp_path / cell
        trained = runner.invoke(cli, ["train", str(tiny_corpus), "--out", str(model), "--cell", cell, "--layers", "2",
                                      "--units", "6", "--embedding-dim", "4", "--seq-length", "10", "--batch-size",
                                      "4", "--max-steps", "1", "--val-fraction", "0.01", "--seed", "3",
                                      "--quiet"])
        assert trained.exit_code == 0, trained.output
    result = runner.invoke(cli, ["cells", str(model), *TEXT, "--top", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    text = " ".join(TEXT)
    assert "".join(data["tokens"]) == text and data["cell"] == cell and data["layers"] == 2
    assert data["source"] == f"given text, characters 0-{len(text)}"
    assert [(s["layer"], s["gate"]) for s in data["saturation"]] == [(l, g) for l in (0, 1)
                                                                     for g in EXPECTED_GATES[cell]]
    assert all(len(feature["best"]) == 2 for feature in data["features"])
    report = model / model_dir.CELLS_DIR  # the default --out
    assert json.loads((report / "cells.json").read_text(encoding="utf-8")) == data
    assert result.stderr.splitlines() == [f"reading given text, characters 0-{len(text)}",
                                          f"traced {len(text)} tokens through 2 {cell} layer(s)",
                                          *(f"wrote {report / name}" for name in CELLS_FILES.values())]


def test_cells_command_prints_a_table_reads_the_training_corpus_and_refuses_in_one_line(tiny_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "report"
    args = ["cells", str(tiny_model_dir), "--characters", "200", "--out", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["feature", "best", "unit"] and len(lines) == 13 + 2
    assert lines[-1].endswith("searched tokens 0-99, held out 100-199")
    assert "(the corpus the model was trained on), characters 0-200" in result.stderr.splitlines()[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(CELLS_FILES.values())

    refused = runner.invoke(cli, args)
    assert refused.exit_code == 1 and "--overwrite" in refused.stderr and refused.stdout == ""
    assert runner.invoke(cli, args + ["--overwrite"]).exit_code == 0

    for extra, code, message in ((["--characters", "0"], 2, "Received: characters=0"),
                                 (["--top", "0"], 2, "Received: top=0"),
                                 (["--corpus", str(tmp_path / "none.txt")], 1, "none.txt"),
                                 (["ROMEO", "--corpus", "python"], 2, "Received: corpus='python'"),
                                 (["ROMEO"], 2, "Received: tokens=5")):
        failed = runner.invoke(cli, ["cells", str(tiny_model_dir), "--out", str(tmp_path / "new"), *extra])
        assert failed.exit_code == code, failed.output
        errors = [line for line in failed.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in failed.output
        assert not (tmp_path / "new").exists()

    shipped = runner.invoke(cli, ["cells", "shakespeare", "ROMEO"])
    assert shipped.exit_code == 1 and "pass --out" in shipped.stderr
