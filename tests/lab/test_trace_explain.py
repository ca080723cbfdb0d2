"""Traces and the explain walk-through agree with the NumPy reference of every cell."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from reference_cells import STEPS
from textgen.backend import keras
from textgen.cli.main import cli
from textgen.model.settings import ModelConfig
from textgen.model.cells import CELL_TYPES
from textgen.errors import ConfigError
from textgen.lab.explain import explain_step, render
from textgen.model.network import build_model, layer_name, named_weights
from textgen.text_model import TextModel
from textgen.tokenization.tokenizer import TextTokenizer

from conftest import TINY_TEXT

TEXT = "ROMEO: But soft"


def random_model(cell, seed=0):
    tokenizer = TextTokenizer.train([TINY_TEXT], level="char")
    config = ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, units=7, embedding_dim=5, cell=cell)
    keras.utils.set_random_seed(seed)
    model = build_model(config)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.7, variable.shape).astype(np.float32))
    return TextModel(model, config, tokenizer)


def reference_trace(text_model, ids):
    """Per layer, per quantity, (T, U): the reference cell run over the embedded ids."""
    config = text_model.config
    weights = {name: v.numpy().astype(np.float64) for name, v in named_weights(text_model.keras_model, config).items()}
    step, state_count = STEPS[config.cell]
    x_all = weights["embedding/embeddings"][ids]  # (T, E)
    layers = []
    for layer in range(config.layers):
        prefix = layer_name(config, layer)
        cell_weights = {name.split("/")[1]: value for name, value in weights.items() if name.startswith(prefix + "/")}
        states = tuple(np.zeros((1, config.units)) for _ in range(state_count))
        records = []
        for x in x_all:
            states, record = step(cell_weights, x[None, :], *states)
            records.append(record)
        layers.append({name: np.concatenate([r[name] for r in records]) for name in records[0]})
        x_all = layers[-1]["hidden"]
    return layers


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_trace_matches_the_reference_and_explain_matches_the_trace(cell):
    model = random_model(cell)
    trace = model.trace(TEXT)
    assert "".join(trace.tokens) == TEXT and trace.generated_from == len(TEXT)
    assert trace.ids == model.tokenizer.encode(TEXT).tolist()
    expected = reference_trace(model, trace.ids)
    for layer, reference in zip(trace.layers, expected):
        assert set(layer) == set(reference)
        for name in reference:
            np.testing.assert_allclose(layer[name], reference[name], atol=1e-5, err_msg=f"{cell} {name}")

    for layer, unit, position in ((0, 3, 0), (1, 6, -1), (1, 0, 5)):
        explanation = explain_step(model, TEXT, position=position, layer=layer, unit=unit)
        reference = expected[layer]
        values = {gate.name: gate.value for gate in explanation.gates}
        for name, value in values.items():
            if name in reference:
                assert value == pytest.approx(reference[name][position, unit], abs=1e-5), (cell, name)
        assert explanation.memory["h"] == pytest.approx(reference["hidden"][position, unit], abs=1e-5)
        if "cell" in reference:
            assert explanation.memory["c"] == pytest.approx(reference["cell"][position, unit], abs=1e-5)
            assert explanation.memory["input"] == pytest.approx(reference["input"][position, unit], abs=1e-5)
        # Each gate's parts add up to its sum.
        for gate in explanation.gates:
            parts = gate.from_input.value + gate.bias + sum(gate.extra.values())
            if not (cell == "gru" and gate.name == "candidate"):
                parts += gate.from_state.value
            else:
                parts -= gate.extra["recurrent bias b'"]  # inside the reset-scaled part
            assert parts == pytest.approx(gate.total, abs=1e-9)
        assert f"unit {unit}" in render(explanation)


def test_trace_records_a_continuation_as_generate_samples_it():
    model = random_model("lstm", seed=3)
    trace = model.trace("ROMEO", continuation=12, temperature=0.9, seed=5)
    generated = model.generate("ROMEO", length=12, temperature=0.9, seed=5)
    assert "".join(trace.tokens) == generated
    assert trace.generated_from == 5 and all(v.shape == (17, 7) for v in trace.layers[1].values())


def test_explain_refuses_out_of_range_choices():
    model = random_model("gru")
    with pytest.raises(ConfigError, match="Received: unit=7"):
        explain_step(model, TEXT, unit=7)
    with pytest.raises(ConfigError, match="Received: position=15"):
        explain_step(model, TEXT, position=15)
    with pytest.raises(ConfigError, match="Received: layer=-1"):
        explain_step(model, TEXT, layer=-1)


def test_explain_command_prints_the_worked_example(tiny_model_dir):
    result = CliRunner().invoke(cli, ["explain", str(tiny_model_dir), "--prompt", "ROMEO: But", "--unit", "2",
                                      "--layer", "1"])
    assert result.exit_code == 0, result.output
    assert "forget f = sigmoid(x.W + h_prev.U + b)" in result.stdout
    assert "kept      f * c_prev" in result.stdout and "h = o * tanh(c)" in result.stdout
    as_json = CliRunner().invoke(cli, ["explain", str(tiny_model_dir), "--prompt", "ROMEO: But", "--unit", "2",
                                       "--layer", "1", "--json"])
    data = json.loads(as_json.stdout)
    import textgen

    trace = textgen.load(tiny_model_dir).trace("ROMEO: But")
    assert data["memory"]["h"] == pytest.approx(float(trace.layers[1]["hidden"][-1, 2]), abs=1e-5)
    bad = CliRunner().invoke(cli, ["explain", str(tiny_model_dir), "--prompt", "ROMEO", "--unit", "99"])
    assert bad.exit_code == 2 and "Received: unit=99" in bad.output
