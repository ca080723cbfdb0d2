"""Every cell variant trains, samples, saves, loads and exports through the default's paths."""

import numpy as np
import pytest
from click.testing import CliRunner

import textgen
from textgen.backend import tf
from textgen.cli.main import cli
from textgen.model.cells import CELL_TYPES



@pytest.mark.parametrize("cell", [c for c in CELL_TYPES if c != "lstm"])
def test_variant_round_trip_through_cli_api_and_savedmodel(cell, tiny_corpus, tmp_path):
    out = tmp_path / cell
    result = CliRunner().invoke(cli, ["train", str(tiny_corpus), "--out", str(out), "--cell", cell,
                                      "--layers", "2", "--units", "12", "--embedding-dim", "8", "--seq-length", "20",
                                      "--batch-size", "8", "--max-steps", "12", "--seed", "3"])
    assert result.exit_code == 0, result.output
    model = textgen.load(out)
    assert model.config.cell == cell
    assert f"{cell}_1/recurrent_kernel" in np.load(out / "weights.npz").files
    # Training moved the weights away from their initial values and to a finite loss.
    history = model.manifest["metrics"]["history"]
    assert np.isfinite(history[-1]["val_loss"])

    text = model.generate("ROMEO:", length=25, temperature=0.7, seed=4)
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 25
    assert text == textgen.load(out).generate("ROMEO:", length=25, temperature=0.7, seed=4)

    sampled = CliRunner().invoke(cli, ["sample", str(out), "--prompt", "ROMEO:", "--length", "25",
                                       "--temperature", "0.7", "--seed", "4"])
    assert sampled.exit_code == 0 and sampled.stdout == text + "\n"  # one line end after the text

    path = model.export()
    served = tf.saved_model.load(str(path))
    texts = served.signatures["serving_default"](
        prompts=tf.constant(["ROMEO:"]), length=tf.constant(25), temperature=tf.constant(0.7),
        top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(4, tf.int64), stop=tf.constant([], tf.string))
    assert texts["text"].numpy()[0].decode("utf-8") == text

    states_per_layer = 2 if cell in ("peephole", "cifg") else 1
    step = served.signatures["step"](tokens=tf.constant([1, 2], tf.int32),
                                     states=tf.zeros([2 * states_per_layer, 2, 12]))
    assert tuple(step["states"].shape) == (2 * states_per_layer, 2, 12)
    assert tuple(step["logits"].shape) == (2, model.config.vocab_size)
