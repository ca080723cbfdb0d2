"""Training speed of ``textgen train`` itself, end to end, against PyTorch's training loop.

    python benchmarks/train_command.py                                   # 2x256, emb 64, batch 64, seq 100
    python benchmarks/train_command.py --units 512 --embedding-dim 128
    python benchmarks/train_command.py --units 16 --short 5 --long 15 --repeats 1   # a smoke run

``benchmarks/training.py`` times textgen's training step inside a harness.
This one times the command a user runs. Each textgen figure comes from two
``textgen train`` processes, one stopped after ``--short`` steps and one after
``--long``; each reports its training seconds (its tokens over its tokens/s,
validation excluded). Their difference over ``long - short`` steps is the
time of a step with everything the command does around it: the data feed,
progress, the epoch-end checkpoints, Python between steps. Start-up, tracing
and compiling fall out of the difference. PyTorch's figure is its own loop
(``benchmarks/training.py --engine torch``) over ``long - short`` timed
steps. The harness's textgen step is timed the same way, to show what the
command adds to it. The three alternate, in turning order, ``--repeats``
times, and the ratio is taken within each round.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from training import add_shape_options  # benchmarks/training.py, beside this file

HERE = Path(__file__).resolve().parent


def shape_options(args) -> list[str]:
    return ["--layers", str(args.layers), "--units", str(args.units), "--embedding-dim", str(args.embedding_dim),
            "--batch-size", str(args.batch_size), "--seq-length", str(args.seq_length)]


def train_seconds(args, steps: int, out: Path) -> float:
    """Training seconds (validation excluded) of a ``textgen train`` run of ``steps`` steps."""
    command = [sys.executable, "-m", "textgen", "train", args.corpus, "--out", str(out), "--overwrite",
               "--max-steps", str(steps), *shape_options(args), "--learning-rate", "2e-3", "--clipnorm", "1.0",
               "--patience", "0", "--seed", "1", "--json"]
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"textgen train failed:\n{child.stderr[-3000:]}")
    metrics = json.loads(child.stdout.strip().splitlines()[-1])
    return metrics["tokens"] / metrics["tokens_per_second"]


def command_step_seconds(args, out: Path) -> float:
    """Seconds per step of ``textgen train``, from a short and a long run."""
    short, long = train_seconds(args, args.short, out), train_seconds(args, args.long, out)
    return (long - short) / (args.long - args.short)


def harness_step_seconds(args, engine: str) -> float:
    """Seconds per step of ``benchmarks/training.py``'s loop for ``engine`` (torch or textgen)."""
    command = [sys.executable, str(HERE / "training.py"), "--corpus", args.corpus, *shape_options(args),
               "--warmup", "10", "--steps", str(args.long - args.short), "--engine", engine, "--speed-only"]
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"{engine} failed:\n{child.stderr[-3000:]}")
    tokens_per_second = json.loads(child.stdout.strip().splitlines()[-1])["tokens_per_second"]
    return args.batch_size * args.seq_length / tokens_per_second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shape_options(parser)
    parser.add_argument("--short", type=int, default=40, help="steps of the short textgen train run")
    parser.add_argument("--long", type=int, default=240, help="steps of the long textgen train run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tokens_per_step = args.batch_size * args.seq_length
    names = ["train", "harness", "torch"]
    if importlib.util.find_spec("torch") is None:
        print("torch is not installed: leaving out the PyTorch reference (pip install -e '.[bench]')",
              file=sys.stderr)
        names.remove("torch")
    runs = {name: [] for name in names}
    print(f"model: {args.layers}x{args.units} LSTM, embedding {args.embedding_dim}, batch {args.batch_size}, "
          f"sequence {args.seq_length}; textgen train at {args.short} and {args.long} steps")
    print(f"{'round':>5} {'textgen train':>14} {'harness step':>13} {'torch':>9} {'train/torch':>12} "
          f"{'harness/torch':>14}   (tokens/s)")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "model"
        for repeat in range(args.repeats):
            order = names[repeat % len(names):] + names[:repeat % len(names)]
            speeds = {}
            for name in order:
                seconds = (command_step_seconds(args, out) if name == "train"
                           else harness_step_seconds(args, "textgen" if name == "harness" else "torch"))
                # Runs too short to tell the two apart (a smoke run) leave no figure.
                speeds[name] = tokens_per_step / seconds if seconds > 0 else float("nan")
                runs[name].append(speeds[name])
            torch = speeds.get("torch", float("nan"))
            print(f"{repeat + 1:>5} {speeds['train']:>14,.0f} {speeds['harness']:>13,.0f} {torch:>9,.0f} "
                  f"{speeds['train'] / torch:>11.2f}x {speeds['harness'] / torch:>13.2f}x", flush=True)
    if "torch" in runs:
        ratios = [train / torch for train, torch in zip(runs["train"], runs["torch"])]
        harness_ratios = [harness / torch for harness, torch in zip(runs["harness"], runs["torch"])]
        print(f"median: textgen train / torch {statistics.median(ratios):.2f}x, "
              f"harness / torch {statistics.median(harness_ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
