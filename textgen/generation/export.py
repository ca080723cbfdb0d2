"""Export a model as a TensorFlow SavedModel that generates text by itself.

The SavedModel holds the in-graph tokenizer and the very ``Generator`` that
``TextModel.generate`` runs, so it needs nothing but ``tensorflow`` to load,
and the same model, prompt, settings and seed give the same text.

Signatures:

* ``serving_default(prompts, length, temperature, top_k, top_p, seed, stop)``
  -> ``{"text": prompts + generated text}``: a batch of prompt strings (B,)
  in, a batch of strings out. ``stop`` is a list of strings (may be empty).
* ``step(tokens, states)`` -> ``{"logits", "states"}``: one model step, for
  callers who drive generation themselves; ``states`` is (S, B, units), layer
  by layer: S = 2 * layers ordered h_0, c_0, h_1, c_1, ... for the LSTM-like
  cells (lstm, peephole, cifg), S = layers (h_0, h_1, ...) for gru and rnn.
"""

from __future__ import annotations

from pathlib import Path

from textgen.backend import tf
from textgen.errors import TextgenError
from textgen.generation.generator import SAMPLING_SPECS, Generator
from textgen.generation.sampling import cut_at_stop
from textgen.tokenization.graph_tokenizer import GraphTokenizer

class ExportModule(tf.Module):
    """The tf.Module written to disk: tokenizer + generation loop + one-step form."""

    def __init__(self, generator: Generator, tokenizer):
        super().__init__(name="textgen")
        self.generator = generator
        self.tokenizer = GraphTokenizer(tokenizer)
        self.state_count = generator.stepper.state_count

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts"), *SAMPLING_SPECS])
    def serve(self, prompts, length, temperature, top_k, top_p, seed, stop):
        """Prompts (B,) -> {"text": (B,)}, each prompt followed by its continuation."""
        vocab = tf.shape(self.generator.token_strings)[0]
        # Out-of-range settings are clamped rather than raised: a server must
        # answer, and the CLI and Python API already refuse them with a message.
        length = tf.maximum(length, 0)
        temperature = tf.where(tf.math.is_finite(temperature), tf.maximum(temperature, 0.0), 0.0)
        top_k = tf.clip_by_value(top_k, 0, vocab)
        top_p = tf.where(top_p > 0.0, tf.minimum(top_p, 1.0), 1.0)
        prompt_ids = self.tokenizer.encode(prompts)  # ragged (B, None)
        new_ids, produced = self.generator.generate(
            prompt_ids.flat_values, tf.cast(prompt_ids.row_lengths(), tf.int32), length, temperature, top_k,
            top_p, seed, stop)
        kept = tf.RaggedTensor.from_tensor(new_ids, lengths=produced)  # (B, None)
        texts = self.tokenizer.decode(kept)
        return {"text": tf.strings.join([prompts, cut_at_stop(texts, stop)])}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32, name="tokens"),
            tf.TensorSpec([None, None, None], tf.float32, name="states"),
        ]
    )
    def step(self, tokens, states):
        """tokens (B,), states (S, B, U) -> {"logits": (B, V), "states": (S, B, U)}."""
        flat = tf.unstack(states, num=self.state_count, axis=0)
        logits, new_states = self.generator.stepper.step(tokens, flat)
        return {"logits": logits, "states": tf.stack(new_states, axis=0)}


def export_saved_model(model, path) -> Path:
    """Write ``model`` (a TextModel) as a SavedModel at ``path``, which must not exist."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise TextgenError(f"the export path exists and is not empty; choose another. Received: out='{path}'")
    module = ExportModule(model.generator, model.tokenizer)
    signatures = {"serving_default": module.serve.get_concrete_function(),
                  "step": module.step.get_concrete_function()}
    try:
        tf.saved_model.save(module, str(path), signatures=signatures)
    except OSError as exc:
        raise TextgenError(f"could not write the SavedModel: {exc}. Received: out='{path}'") from None
    return path
