"""The memory experiment: equal-parameter sizing, the gradient-norm probe, training, and the command end to end."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from textgen.backend import tf
from textgen.cli.main import cli
from textgen.experiments.memory import tasks as memory_tasks
from textgen.errors import ConfigError, ExperimentError
from textgen.experiments.memory.experiment import (OUTPUTS, MemoryRun, MemorySettings, check_out_dir, format_table, gradient_norms,
                                model_config, run_memory_experiment, set_keep_bias,
                                units_for_budget)
from textgen.model.network import ModelStep, build_model, layer_weights

V = len(memory_tasks.ALPHABET)


def count(cell, units, embedding_dim=16):
    return model_config(cell, units, embedding_dim).parameter_count()


@pytest.mark.parametrize("budget", [900, 23_000, 100_000])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "peephole", "cifg"])
def test_the_units_chosen_give_the_parameter_count_nearest_the_budget(cell, budget):
    units = units_for_budget(cell, budget, 16)
    gap = abs(count(cell, units) - budget)
    assert gap <= abs(count(cell, units + 1) - budget)
    assert units == 1 or gap <= abs(count(cell, units - 1) - budget)


def test_the_default_budget_gives_nearly_equal_models():
    counts = {cell: count(cell, units_for_budget(cell, 23_000, 16)) for cell in ("rnn", "gru", "lstm")}
    assert counts == {"rnn": 22_922, "gru": 22_972, "lstm": 23_004}  # within 0.4% of each other
    assert [units_for_budget(cell, 23_000, 16) for cell in ("rnn", "gru", "lstm")] == [129, 74, 64]


def test_a_budget_too_small_for_one_unit_is_refused():
    with pytest.raises(ConfigError, match=r"at least 576 parameters .* Received: parameters=500$"):
        units_for_budget("lstm", 500, 16)


def rnn_step(w: float, u_in: float, bias: float, embeddings: np.ndarray, dense: np.ndarray, dense_bias: np.ndarray):
    """A 1-unit, 1-dimensional-embedding rnn with every weight set by hand."""
    config = model_config("rnn", 1, 1)
    model = build_model(config)
    model.get_layer("embedding").embeddings.assign(embeddings.reshape(V, 1).astype(np.float32))
    weights = layer_weights(model, config, 0)
    weights["kernel"].assign([[u_in]])
    weights["recurrent_kernel"].assign([[w]])
    weights["bias"].assign([bias])
    model.get_layer("logits").kernel.assign(dense.reshape(1, V).astype(np.float32))
    model.get_layer("logits").bias.assign(dense_bias.astype(np.float32))
    return ModelStep(model, config)


def test_rnn_gradient_norms_are_the_product_of_w_times_one_minus_h_squared():
    """h_t = tanh(u e[x_t] + w h_{t-1} + b), so dL/dh_{t-k} = dL/dh_t * prod_{j>t-k} w (1 - h_j^2)."""
    rng = np.random.default_rng(0)
    embeddings, dense, dense_bias = rng.normal(0, 1, V), rng.normal(0, 1, V), rng.normal(0, 0.1, V)
    w, u_in, bias = 0.9, 0.7, 0.1
    tokens = rng.integers(0, V, (5, 31))  # (B, K+1), K = 30
    targets = rng.integers(0, V, 5)

    expected = []
    for row, target in zip(tokens, targets):
        h, hs = 0.0, []
        for token in row:
            h = np.tanh(u_in * embeddings[token] + w * h + bias)
            hs.append(h)
        logits = h * dense + dense_bias
        p = np.exp(logits - logits.max())
        p /= p.sum()
        grad = float(np.dot(p - np.eye(V)[target], dense))  # dL/dh_K
        norms = [abs(grad)]
        for k in range(1, len(row)):
            grad *= w * (1 - hs[len(row) - k] ** 2)  # back through step K-k+1
            norms.append(abs(grad))
        expected.append(norms)
    expected = np.mean(expected, axis=0)

    measured = gradient_norms(rnn_step(w, u_in, bias, embeddings, dense, dense_bias), tokens, targets)
    assert measured.shape == (31,)
    np.testing.assert_allclose(measured, expected, rtol=2e-4)
    assert measured[30] < 0.9 ** 30 * measured[0]  # geometric decay, at least as fast as w^k


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_gradient_at_k_0_is_the_output_layers_own(cell):
    """dL/dh_t = W_out (softmax - one_hot) for every cell: checks that h, not c, is the state watched."""
    config = model_config(cell, 5, 4)
    model = build_model(config)
    rng = np.random.default_rng(1)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.5, variable.shape).astype(np.float32))
    step = ModelStep(model, config)
    tokens, targets = rng.integers(0, V, (3, 6)), rng.integers(0, V, 3)
    logits = model(tokens.astype(np.int32))[:, -1].numpy()  # (B, V)
    p = tf.nn.softmax(logits).numpy() - np.eye(V)[targets]
    direct = np.linalg.norm(p @ model.get_layer("logits").kernel.numpy().T, axis=1).mean()
    norms = gradient_norms(step, tokens, targets)
    assert norms[0] == pytest.approx(direct, rel=1e-4)
    assert np.all(norms > 0)


@pytest.mark.parametrize(("cell", "gate"), [("lstm", "forget"), ("peephole", "forget"), ("cifg", "forget"),
                                          ("gru", "update")])
def test_the_keep_bias_sets_the_gate_that_keeps_the_state(cell, gate):
    config = model_config(cell, 3, 2)
    model = build_model(config)
    bias = layer_weights(model, config, 0)["bias"]
    before = np.array(bias.numpy())
    set_keep_bias(model, config, 5.0)
    for variable in model.trainable_variables:  # everything but the biases off: each gate is sigmoid(its bias)
        if "bias" not in variable.path:
            variable.assign(np.zeros(variable.shape, np.float32))
    step = ModelStep(model, config)
    _, _, records = step.trace_step(tf.constant([1, 2]), step.initial_states(2))
    np.testing.assert_allclose(records[0][gate].numpy(), 1 / (1 + np.exp(-5.0)), rtol=1e-6)
    changed = np.flatnonzero((np.array(bias.numpy()) != before).ravel())
    assert len(changed) <= 2 * 3  # only the keep gate's block (gru: in both bias rows)
    if cell in ("lstm", "peephole"):  # the input gate keeps its own bias
        np.testing.assert_allclose(records[0]["input"].numpy()[0], 1 / (1 + np.exp(-before[:3])), rtol=1e-6)


def test_a_trained_model_answers_a_short_copy_task():
    settings = MemorySettings(tasks=("copy",), distances=(4,), cells=("lstm",), parameters=3000,
                              embedding_dim=8, seconds_per_run=60, max_steps=150, learning_rate=1e-2,
                              eval_sequences=200, pad=2)
    run = MemoryRun(settings, "copy", 4, "lstm")
    before = run.score()
    trained = run.train()
    after = run.score()
    assert trained["steps"] == 150 and not trained["diverged"]
    assert before["accuracy"] < 0.5 and after["accuracy"] > 0.95
    assert after["eval_loss"] < 0.2 < before["eval_loss"]


@pytest.mark.parametrize(("changes", "message"), [
    (dict(distances=(10, 1)), r"Received: distances=1$"),
    (dict(distances=(10, 10)), r"Received: distances=\[10, 10\]$"),
    (dict(cells=("lstm", "transformer")), r"Received: cell='transformer'$"),
    (dict(tasks=("parity",)), r"Received: task='parity'$"),
    (dict(loss_on="some"), r"Received: loss_on='some'$"),
    (dict(seconds_per_run=float("nan")), r"Received: seconds_per_run=nan$"),
    (dict(max_steps=0), r"Received: max_steps=0$"),
    (dict(forget_bias=float("inf")), r"Received: forget_bias=inf$"),
])
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        MemorySettings(**changes)


def test_existing_results_are_never_overwritten(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ExperimentError, match=r"results.json already exists.*Received: path='.*results.json'$"):
        check_out_dir(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ExperimentError, match=r"must be a directory"):
        check_out_dir(tmp_path / "file")


def test_the_table_has_one_aligned_line_per_run():
    runs = [dict(task="copy", distance=10, cell=cell, units=64, parameters=23_004, steps=812, cpu_seconds=30.2,
                 eval_loss=0.01, accuracy=acc, chance=0.25) for cell, acc in (("rnn", 0.25), ("lstm", 1.0))]
    lines = format_table(runs).splitlines()
    assert lines[0].split() == ["task", "D", "cell", "units", "params", "steps", "cpu", "s", "loss", "accuracy",
                                "chance"]
    assert lines[2].split() == ["copy", "10", "lstm", "64", "23,004", "812", "30", "0.010", "1.000", "0.250"]
    assert len({len(line) for line in lines}) == 1


def test_the_command_runs_the_experiment_end_to_end(tmp_path):
    """The CI configuration: one task, one distance, the three cells, three steps each."""
    out = tmp_path / "memory"
    result = CliRunner().invoke(cli, [
        "experiment", "memory", "--tasks", "brackets", "--distances", "4", "--seconds-per-run", "1",
        "--max-steps", "3", "--parameters", "1200", "--batch-size", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["task", "D", "cell"]
    assert [line.split()[:3] for line in lines[1:]] == [["brackets", "4", cell] for cell in ("rnn", "gru", "lstm")]
    assert "brackets D=4 lstm" in result.stderr
    assert (out / "table.txt").read_text().strip() == result.stdout.strip()
    for name in ("accuracy.png", "gradient_norms.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = CliRunner().invoke(cli, ["experiment", "memory", "--out", str(out)])
    assert again.exit_code == 1 and "results.json already exists" in again.stderr


def test_every_task_distance_and_cell_is_run_scored_and_recorded(tmp_path):
    settings = MemorySettings(tasks=("quote",), distances=(3, 5), cells=("rnn", "lstm"), parameters=1200,
                              seconds_per_run=1, max_steps=2, batch_size=4, eval_sequences=300, jit_compile=False)
    lines = []
    result = run_memory_experiment(settings, out=tmp_path, progress=lines.append)
    assert [(r["task"], r["distance"], r["cell"]) for r in result["runs"]] == [
        ("quote", d, cell) for d in (3, 5) for cell in ("rnn", "lstm")]
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == result["runs"]
    for run in result["runs"]:
        assert run["steps"] == 2 and 0 <= run["accuracy"] <= 1 and run["chance"] == 0.25
        assert run["eval_loss"] > 0 and abs(run["parameters"] - 1200) < 60
        assert len(run["gradient_norms"]) == result["k_max"] + 1 == 6
    assert set(result["untrained_gradient_norms"]["quote"]) == {"rnn", "lstm"}
    assert len(lines) == 2 + 4 and lines[-1].startswith("quote D=5 lstm: 2 steps")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(OUTPUTS)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--distances", "10,x"], "comma-separated list of int"),
    (["--distances", "1"], "Received: distances=1"),
    (["--cells", "lstm,lstm"], "Received: cells=['lstm', 'lstm']"),
])
def test_bad_options_exit_with_2(tmp_path, arguments, message):
    result = CliRunner().invoke(cli, ["experiment", "memory", "--out", str(tmp_path / "x"), *arguments])
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "x").exists()
