"""Export a model as a TensorFlow SavedModel that generates text by itself.

The SavedModel holds the in-graph tokenizer and the very ``Generator`` that
``TextModel.generate`` runs, so it needs nothing but ``tensorflow`` to load,
and the same model, prompt, settings and seed give the same text.

The SavedModel is written beside its destination and renamed into place, so a
crash or a full disk never leaves half of one where a loader would find it.

Signatures:

* ``serving_default(prompts, length, temperature, top_k, top_p, seed, stop)``
  -> ``{"text": prompts + generated text}``: a batch of prompt strings (B,)
  in, a batch of strings out. ``stop`` is a list of strings (may be empty).
  A server must answer, so settings out of range are clamped, not refused:
  ``length`` to [0, MAX_LENGTH] (0 or less gives the prompts back as they
  are), ``temperature`` to >= 0 (NaN: greedy), ``top_k`` to [0, vocabulary],
  ``top_p`` to (0, 1]. An empty batch gives an empty batch.
* ``step(tokens, states)`` -> ``{"logits", "states"}``: one model step, for
  callers who drive generation themselves; ``states`` is (S, B, units), layer
  by layer: S = 2 * layers ordered h_0, c_0, h_1, c_1, ... for the LSTM-like
  cells (lstm, peephole, cifg), S = layers (h_0, h_1, ...) for gru and rnn.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from textgen.backend import tf
from textgen.config import MAX_LENGTH
from textgen.errors import TextgenError
from textgen.files import fsync_dir
from textgen.generation.generator import SAMPLING_SPECS, Generator
from textgen.generation.sampling import cut_at_stop
from textgen.tokenization.graph_tokenizer import GraphTokenizer

SAVED_MODEL_PB = "saved_model.pb"  # the file that makes a folder a SavedModel
_STAGING_PREFIX = ".tmp-export-"


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
        length = tf.clip_by_value(length, 0, MAX_LENGTH)
        temperature = tf.where(tf.math.is_finite(temperature), tf.maximum(temperature, 0.0), 0.0)
        top_k = tf.clip_by_value(top_k, 0, vocab)
        top_p = tf.where(top_p > 0.0, tf.minimum(top_p, 1.0), 1.0)

        def generate():
            prompt_ids = self.tokenizer.encode(prompts)  # ragged (B, None)
            new_ids, produced = self.generator.generate(
                prompt_ids.flat_values, tf.cast(prompt_ids.row_lengths(), tf.int32), length, temperature, top_k,
                top_p, seed, stop)
            kept = tf.RaggedTensor.from_tensor(new_ids, lengths=produced)  # (B, None)
            return tf.strings.join([prompts, cut_at_stop(self.tokenizer.decode(kept), stop)])

        # Nothing to generate (no tokens asked for, or no prompts): the prompts are the answer.
        texts = tf.cond((length > 0) & (tf.size(prompts) > 0), generate, lambda: tf.identity(prompts))
        return {"text": texts}

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


def export_saved_model(model, path, *, overwrite: bool = False) -> Path:
    """Write ``model`` (a TextModel) as a SavedModel at ``path`` and return the path.

    ``path`` must not exist, or be an empty folder, or, with ``overwrite``, a
    SavedModel (which is replaced); a folder of anything else is never touched.
    The SavedModel is written to a temporary folder beside ``path`` and renamed
    into place; on any failure nothing is left behind but what was there.
    """
    path = Path(path)
    _check_destination(path, overwrite)
    module = ExportModule(model.generator, model.tokenizer)
    signatures = {"serving_default": module.serve.get_concrete_function(),
                  "step": module.step.get_concrete_function()}
    staging = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in path.parent.glob(f"{_STAGING_PREFIX}{path.name}-*"):  # from a run that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{path.name}-", dir=path.parent))
        tf.saved_model.save(module, str(staging / "new"), signatures=signatures)
        if path.exists():
            path.rename(staging / "old")  # removed with the staging folder
        (staging / "new").rename(path)
        fsync_dir(path.parent)
    except (OSError, tf.errors.OpError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "message", None) or str(exc)
        raise TextgenError(f"could not write the SavedModel: {reason.strip().splitlines()[0][:200]}. "
                           f"Received: out='{path}'") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return path


def _check_destination(path: Path, overwrite: bool) -> None:
    """Refuse, before any work, an export that would replace what it should not."""
    if not path.exists():
        return
    if not path.is_dir():
        raise TextgenError(f"the export path exists and is not a folder. Received: out='{path}'")
    if not any(path.iterdir()):
        return
    if not (path / SAVED_MODEL_PB).is_file():
        raise TextgenError(f"the export path exists, is not empty and is not a SavedModel; choose another. "
                           f"Received: out='{path}'")
    if not overwrite:
        raise TextgenError(f"a SavedModel already exists there; pass --overwrite to replace it. "
                           f"Received: out='{path}'")
