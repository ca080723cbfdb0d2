"""Generation speed: the in-process Python API against the exported SavedModel, and both against the matmul ceiling.

Both run the same in-graph loop; this measures what the SavedModel adds (its
in-graph tokenizer and signature call). The model is untrained: speed does
not depend on the weights, only on the shape.

The matmul ceiling for a row count is the speed of a loop that does nothing
but a generation step's matrix products for that many rows, in the same
order and with the same shapes (per layer the input and the recurrent
product, then the output projection; the first layer without its input
product for the batches whose loop gathers it from a table), each step's products depending on the
step before, timed the same way (the faster of an XLA-compiled and a graph
loop). No generation loop with these shapes can beat it on this machine;
the fraction of it reached is what the rest of the step costs.

    python benchmarks/generation.py                  # 2x256 char model, 1 and 64 rows
    python benchmarks/generation.py --units 16 --length 50 --repeats 1   # a smoke run

Runs alternate between the two paths so that machine noise hits both alike;
the best of ``--repeats`` runs is reported for each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


# The characters of the untrained models' char tokenizer: speed depends on the vocabulary's size only.
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\n-&3$"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model's shape, as the generation benchmarks take it: a 2x256 LSTM with embedding 64 by default."""
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embedding-dim", type=int, default=64)


def build_model(units: int, layers: int, embedding_dim: int, text: str):
    from textgen.text_model import TextModel
    from textgen.backend import keras
    from textgen.model.settings import ModelConfig
    from textgen.model.network import build_model as build_keras_model
    from textgen.tokenization.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.train([text], level="char")
    config = ModelConfig(vocab_size=tokenizer.vocab_size, layers=layers, units=units, embedding_dim=embedding_dim)
    keras.utils.set_random_seed(0)
    return TextModel(build_keras_model(config), config, tokenizer)


def matmul_ceiling(rows: int, length: int, units: int, layers: int, embedding_dim: int, vocab: int,
                   repeats: int) -> float:
    """Tokens/s of ``length`` steps of only the step's matrix products for ``rows`` rows (best of ``repeats``).

    Where the generation loop gathers the first layer's input share from a table made ahead
    (``Generator._draw_steps``), that layer's input product is left out here too.
    """
    from textgen.backend import tf
    from textgen.generation.generator import NOISE_AHEAD_ABOVE, TABLE_MAX_VOCAB

    tabled = rows > NOISE_AHEAD_ABOVE and vocab <= TABLE_MAX_VOCAB

    rng = np.random.default_rng(0)

    def weights(rows_in: int, columns: int):  # unit variance in, about unit variance out
        return tf.constant((rng.standard_normal((rows_in, columns)) / np.sqrt(rows_in)).astype(np.float32))

    kernels = [weights(embedding_dim if layer == 0 else units, 4 * units) for layer in range(layers)]
    recurrent = [weights(units, 4 * units) for _ in range(layers)]
    output = weights(units, vocab)

    def steps(x, states):
        def body(t, x, states, logits):
            inputs, new_states = x, []
            for layer in range(layers):
                if layer == 0 and tabled:  # the table's row stands in for the input product
                    gates = inputs[:, :1] + tf.matmul(states[layer], recurrent[layer])  # (B, 4U)
                else:
                    gates = tf.matmul(inputs, kernels[layer]) + tf.matmul(states[layer], recurrent[layer])  # (B, 4U)
                inputs = gates[:, :units]  # (B, U): stands for the layer's new hidden state
                new_states.append(inputs)
            logits = tf.matmul(inputs, output)  # (B, V)
            # The next input depends on this step, as the embedding of the drawn token does.
            return t + 1, x + logits[:, :1], tf.stack(new_states), logits

        logits = tf.zeros([rows, vocab])
        return tf.while_loop(lambda t, *_: t < length, body, (0, x, states, logits))[3]

    x = tf.constant(rng.standard_normal((rows, embedding_dim)).astype(np.float32))
    states = tf.zeros([layers, rows, units])
    best = float("inf")
    for compiled in (tf.function(steps, jit_compile=True), tf.function(steps)):
        compiled(x, states).numpy()  # trace and compile
        for _ in range(repeats):
            began = time.perf_counter()
            compiled(x, states).numpy()
            best = min(best, time.perf_counter() - began)
    return rows * length / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--length", type=int, default=2000, help="tokens generated per row")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from textgen.backend import tf

    model = build_model(args.units, args.layers, args.embedding_dim, ALPHABET)
    with tempfile.TemporaryDirectory() as folder:
        saved = tf.saved_model.load(str(model.export(Path(folder) / "saved_model")))
        serve = saved.signatures["serving_default"]
        print(f"model: {args.layers}x{args.units} LSTM, embedding {args.embedding_dim}, "
              f"vocabulary {model.config.vocab_size}; {args.length} tokens per row; best of {args.repeats}")
        print(f"{'rows':>5} {'python API tok/s':>17} {'SavedModel tok/s':>17} {'API/Saved':>9} "
              f"{'matmul ceiling tok/s':>21} {'API/ceiling':>11}")
        for rows in args.rows:
            prompts = ["ROMEO:"] * rows

            def python_api():
                model.generate(prompts, length=args.length, temperature=0.8, seed=1)

            def saved_model():
                serve(prompts=tf.constant(prompts), length=tf.constant(args.length),
                      temperature=tf.constant(0.8), top_k=tf.constant(0), top_p=tf.constant(1.0),
                      seed=tf.constant(1, tf.int64), stop=tf.constant([], tf.string))["text"].numpy()

            python_api(), saved_model()  # trace and warm up both
            timings = {python_api: [], saved_model: []}
            for _ in range(args.repeats):
                for run in (python_api, saved_model):
                    began = time.perf_counter()
                    run()
                    timings[run].append(time.perf_counter() - began)
            api_rate = rows * args.length / min(timings[python_api])
            saved_rate = rows * args.length / min(timings[saved_model])
            ceiling = matmul_ceiling(rows, args.length, args.units, args.layers, args.embedding_dim,
                                     model.config.vocab_size, args.repeats)
            print(f"{rows:>5} {api_rate:>17,.0f} {saved_rate:>17,.0f} {api_rate / saved_rate:>8.2f}x "
                  f"{ceiling:>21,.0f} {api_rate / ceiling:>11.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
