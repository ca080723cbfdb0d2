"""Training speed, memory and quality: textgen against stock Keras and PyTorch.

    python benchmarks/training.py                          # 2x256, emb 64, batch 64, seq 100
    python benchmarks/training.py --units 512 --embedding-dim 128
    python benchmarks/training.py --engines textgen torch --repeats 5 --budget 0   # speed ratio only
    python benchmarks/training.py --units 16 --steps 3 --budget 5 --gen-tokens 20   # a smoke run

Each engine runs in its own process, one after the other, on the same model
shape, corpus, batch and sequence length, so that its peak RSS is its own and
its TensorFlow start-up settings (oneDNN) are its own:

* ``textgen``: textgen's model and training step (``FusedLSTM``, oneDNN on,
  XLA-compiled step, PyTorch-style initialisation), its in-graph generation loop,
  and its compiled evaluation (``Evaluator``, batches of ``--batch-size`` windows),
  as ``textgen train`` validates;
* ``keras``: stock Keras with its defaults (``model.compile`` + ``train_on_batch``,
  oneDNN off as TensorFlow leaves it on this CPU) and a Python loop over a
  one-step model for generation, as the TensorFlow text-generation tutorial does,
  and eager evaluation in batches of 128 windows;
* ``torch``: ``torch.nn.LSTM`` (oneDNN's fused LSTM on CPU), if torch is installed
  (``pip install -e ".[bench]"``).

For each it prints training tokens/s and its ratio to PyTorch, peak RSS,
single-stream generation tokens/s, and the validation loss (nats/char, last
10% of the corpus) after the same wall-clock training budget. With
``--repeats N`` each engine's training speed is measured in N processes,
interleaved in alternating order, and the median is reported with every run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_ids(path: str):
    text = Path(path).read_text(encoding="utf-8")
    alphabet = sorted(set(text))
    lookup = {char: index for index, char in enumerate(alphabet)}
    ids = np.array([lookup[char] for char in text], np.int32)
    split = int(len(ids) * 0.9)
    return ids[:split], ids[split:], len(alphabet)


def batches(ids: np.ndarray, batch: int, seq: int, seed: int):
    """Endless random windows: (x, y) int arrays of shape (batch, seq)."""
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(ids) - seq - 1, batch)
        windows = ids[starts[:, None] + np.arange(seq + 1)]
        yield windows[:, :-1], windows[:, 1:]


def eval_windows(ids: np.ndarray, seq: int, limit: int = 200_000):
    ids = ids[: limit + 1]
    count = (len(ids) - 1) // seq
    x = ids[: count * seq].reshape(count, seq)
    y = ids[1 : count * seq + 1].reshape(count, seq)
    return x, y


# --- engines: each returns (train_step(x, y) -> loss, val_loss(x, y) -> float, generate(n) -> None) ----------


def tensorflow_engine(args, vocab: int, textgen_path: bool):
    if textgen_path:
        from textgen.backend import keras, tf  # oneDNN on, backend chosen by textgen
        from textgen.config import TrainConfig
        from textgen.model.settings import ModelConfig
        from textgen.generation.generator import Generator
        from textgen.model.network import ModelStep, build_model
        from textgen.model.loss import Evaluator
        from textgen.training.loop import Trainer

        config = ModelConfig(vocab_size=vocab, layers=args.layers, units=args.units,
                             embedding_dim=args.embedding_dim, dropout=0.0)
        model = build_model(config)
        trainer = Trainer(model, config, TrainConfig(batch_size=args.batch_size, seq_length=args.seq_length,
                                                     learning_rate=2e-3, clipnorm=1.0), np.ones(vocab))
        step = trainer._train_step
        generator = Generator(ModelStep(model, config), [chr(65 + i % 26) for i in range(vocab)], start_id=0)

        def generate(tokens: int) -> None:
            generator.generate(tf.constant([1], tf.int32), tf.constant([1], tf.int32), tokens, 0.8, 0, 1.0,
                               tf.constant(1, tf.int64), tf.constant([], tf.string))[0].numpy()

        # textgen's own compiled evaluation, as `textgen train` validates: the same windows as
        # eval_windows (x is y shifted by one), so the loss is the same quantity as the others'.
        evaluator = Evaluator(model, np.ones(vocab), args.seq_length, args.batch_size)

        def val_loss(x, y) -> float:
            return evaluator.evaluate(np.concatenate([x.reshape(-1), y[-1, -1:]])).loss
    else:
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import keras
        import tensorflow as tf

        tokens_in = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(vocab, args.embedding_dim)(tokens_in)
        for _ in range(args.layers):
            x = keras.layers.LSTM(args.units, return_sequences=True)(x)
        model = keras.Model(tokens_in, keras.layers.Dense(vocab)(x))
        model.compile(optimizer=keras.optimizers.Adam(2e-3, global_clipnorm=1.0),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

        def step(x, y):
            return model.train_on_batch(x, y)

        # The tutorial's way to generate: a one-step model called from Python, states carried by hand.
        step_in = keras.Input(shape=(1,), dtype="int32")
        state_ins, state_outs = [], []
        h = model.layers[1](step_in)
        lstm_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
        for layer in lstm_layers:
            h_in, c_in = keras.Input(shape=(args.units,)), keras.Input(shape=(args.units,))
            cell_layer = keras.layers.LSTM(args.units, return_sequences=True, return_state=True)
            h, h_out, c_out = cell_layer(h, initial_state=[h_in, c_in])
            cell_layer.set_weights(layer.get_weights())
            state_ins += [h_in, c_in]
            state_outs += [h_out, c_out]
        logits = model.layers[-1](h)
        one_step = keras.Model([step_in, *state_ins], [logits, *state_outs])

        def generate(tokens: int) -> None:
            token = tf.constant([[1]], tf.int32)
            states = [tf.zeros((1, args.units), tf.float32)] * (2 * args.layers)
            for _ in range(tokens):
                logits, *states = one_step([token, *states], training=False)
                token = tf.random.categorical(logits[:, -1] / 0.8, 1, dtype=tf.int32)

        def val_loss(x, y) -> float:
            total = 0.0
            for first in range(0, len(x), 128):
                logits = model(x[first : first + 128], training=False)
                total += float(tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                    y[first : first + 128], logits, from_logits=True)))
            return total / y.size

    return (lambda x, y: float(step(x, y))), val_loss, generate


def torch_engine(args, vocab: int):
    import torch

    torch.manual_seed(0)

    class CharLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(vocab, args.embedding_dim)
            self.lstm = torch.nn.LSTM(args.embedding_dim, args.units, args.layers, batch_first=True)
            self.head = torch.nn.Linear(args.units, vocab)

        def forward(self, x, state=None):
            h, state = self.lstm(self.embedding(x), state)
            return self.head(h), state

    model = CharLSTM()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y) -> float:
        x, y = torch.from_numpy(x).long(), torch.from_numpy(y).long()
        logits, _ = model(x)
        loss = loss_fn(logits.reshape(-1, vocab), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return float(loss)

    def val_loss(x, y) -> float:
        with torch.no_grad():
            total = 0.0
            for first in range(0, len(x), 128):
                logits, _ = model(torch.from_numpy(x[first : first + 128]).long())
                total += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, vocab), torch.from_numpy(y[first : first + 128]).long().reshape(-1),
                    reduction="sum"))
        return total / y.size

    def generate(tokens: int) -> None:
        with torch.no_grad():
            token, state = torch.tensor([[1]]), None
            for _ in range(tokens):
                logits, state = model(token, state)
                token = torch.multinomial(torch.softmax(logits[:, -1] / 0.8, -1), 1)

    return step, val_loss, generate


def run_engine(args) -> dict:
    """Measure one engine in this process and return its figures."""
    train_ids, val_ids, vocab = load_ids(args.corpus)
    if args.engine == "torch":
        step, val_loss, generate = torch_engine(args, vocab)
    else:
        step, val_loss, generate = tensorflow_engine(args, vocab, textgen_path=args.engine == "textgen")
    data = batches(train_ids, args.batch_size, args.seq_length, seed=0)
    for _ in range(args.warmup):
        step(*next(data))
    began = time.perf_counter()
    for _ in range(args.steps):
        step(*next(data))
    tokens_per_second = args.steps * args.batch_size * args.seq_length / (time.perf_counter() - began)
    if args.speed_only:
        return {"engine": args.engine, "tokens_per_second": tokens_per_second}
    # Keep training to the same wall-clock budget, counted from the first timed step.
    while time.perf_counter() - began < args.budget:
        step(*next(data))
    loss = val_loss(*eval_windows(val_ids, args.seq_length))
    generate(10)
    began = time.perf_counter()
    generate(args.gen_tokens)
    generation = args.gen_tokens / (time.perf_counter() - began)
    return {"engine": args.engine, "tokens_per_second": tokens_per_second, "peak_rss_mb": peak_rss_mb(),
            "generation_tokens_per_second": generation, "val_loss": loss}


def add_shape_options(parser: argparse.ArgumentParser) -> None:
    """The corpus and the model and batch shape, which every training benchmark takes alike."""
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-length", type=int, default=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_options(parser)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (tracing, compiling)")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps")
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds before the validation loss")
    parser.add_argument("--gen-tokens", type=int, default=1000)
    parser.add_argument("--engines", nargs="+", default=["textgen", "keras", "torch"])
    parser.add_argument("--repeats", type=int, default=1,
                        help="training-speed runs per engine; the extra ones are speed-only processes, "
                             "interleaved in alternating engine order, and the median is reported")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--speed-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(run_engine(args)))
        return

    engines = list(args.engines)
    if "torch" in engines and importlib.util.find_spec("torch") is None:
        print("torch is not installed: skipping the PyTorch reference (pip install -e '.[bench]')", file=sys.stderr)
        engines.remove("torch")
    results = {engine: run_child(engine) for engine in engines}
    speeds = {engine: [result["tokens_per_second"]] for engine, result in results.items()}
    # This machine's speed drifts by 10% or more over minutes, so one run per engine can
    # favour whichever ran in a fast minute; alternating the order and taking medians does not.
    for repeat in range(1, args.repeats):
        for engine in engines[::-1] if repeat % 2 else engines:
            speeds[engine].append(run_child(engine, "--speed-only")["tokens_per_second"])

    medians = {engine: float(np.median(values)) for engine, values in speeds.items()}
    reference = medians.get("torch")
    print(f"model: {args.layers}x{args.units} LSTM, embedding {args.embedding_dim}, batch {args.batch_size}, "
          f"sequence {args.seq_length}; {args.steps} timed steps x {args.repeats} runs (median); "
          f"validation after {args.budget:.0f} s")
    print(f"{'engine':<8} {'train tok/s':>12} {'vs torch':>9} {'peak RSS MB':>12} {'gen tok/s':>10} {'val loss':>9}"
          f"  {'runs (tok/s)'}")
    for engine, r in results.items():
        ratio = f"{medians[engine] / reference:.2f}x" if reference else "-"
        runs = " ".join(f"{value:,.0f}" for value in speeds[engine])
        print(f"{engine:<8} {medians[engine]:>12,.0f} {ratio:>9} {r['peak_rss_mb']:>12,.0f} "
              f"{r['generation_tokens_per_second']:>10,.0f} {r['val_loss']:>9.4f}  {runs}")


def run_child(engine: str, *extra: str) -> dict:
    """Run one engine in a fresh process (its own RSS and TensorFlow settings) and return its figures."""
    env = dict(os.environ)
    if engine == "keras":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"  # TensorFlow's own default on this CPU
    child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--engine", engine, *extra], env=env,
                           capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"{engine} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
