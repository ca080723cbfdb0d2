"""Fine-tuning a trained model against training from scratch, at equal wall-clock time.

    python benchmarks/fine_tuning.py --base shakespeare --corpus kjv.txt        # the figures in BENCHMARKS.md
    python benchmarks/fine_tuning.py --base python --corpus textgen-source
    python benchmarks/fine_tuning.py --base models/tiny --corpus my.txt --minutes 0.2 --marks 0.1,0.2  # smoke

Two ``textgen train`` commands run at the same time on the same corpus, each
with ``--max-time``, so that both see the same machine:

* scratch: a new model with the settings a user would pick for a time budget
  (the defaults and ``--preset budget``, or ``--scratch-args``);
* fine-tune: ``--init-from BASE`` with textgen's fine-tuning defaults (or
  ``--fine-args``).

Both validate on the same held-out text (the last 10% of the corpus) in
windows of ``--val-seq-length`` tokens, so their losses compare. For each mark
(minutes of training) the table gives the best validation loss a run had
reached by then, from the validations recorded in its manifest (one at each
epoch's end, and one when the time limit stops the run). ``textgen-source`` as the corpus stands for textgen's own
Python files, gathered into one file.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def textgen_source(workdir: Path) -> Path:
    """textgen's own .py files, sorted by path and joined, as one corpus file."""
    import textgen

    package = Path(textgen.__file__).parent
    files = sorted(path for path in package.rglob("*.py") if "__pycache__" not in path.parts)
    out = workdir / "textgen-source.txt"
    out.write_text("\n".join(path.read_text(encoding="utf-8") for path in files), encoding="utf-8")
    return out


def train_command(corpus: Path, out: Path, minutes: float, val_seq_length: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "textgen", "train", str(corpus), "--out", str(out), "--max-time", f"{minutes * 60:g}",
            "--patience", "0", "--epochs", "100000", "--val-seq-length", str(val_seq_length), "--seed", "1", *extra]


def best_by(history: list[dict], seconds: float) -> float | None:
    """The best validation loss among the validations made within ``seconds`` of training."""
    losses = [record["val_loss"] for record in history if record["seconds"] <= seconds + 1e-6]
    return min(losses) if losses else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="The model to fine-tune: a model directory or a shipped name.")
    parser.add_argument("--corpus", required=True, help="A text file, or textgen-source (textgen's own code).")
    parser.add_argument("--minutes", type=float, default=10.0, help="Training time of each run.")
    parser.add_argument("--marks", default="1,2,5,10", help="Minutes at which the losses are read.")
    parser.add_argument("--val-seq-length", type=int, default=256)
    parser.add_argument("--scratch-args", default="--preset budget", help="Extra textgen train options, scratch.")
    parser.add_argument("--fine-args", default="", help="Extra textgen train options, fine-tuning.")
    parser.add_argument("--workdir", help="Where the two model directories go (default: a temporary folder).")
    args = parser.parse_args()
    marks = [float(mark) for mark in args.marks.split(",")]

    with tempfile.TemporaryDirectory() as scratch_dir:
        workdir = Path(args.workdir or scratch_dir)
        workdir.mkdir(parents=True, exist_ok=True)
        corpus = textgen_source(workdir) if args.corpus == "textgen-source" else Path(args.corpus)
        runs = {
            "scratch": train_command(corpus, workdir / "scratch", args.minutes, args.val_seq_length,
                                     shlex.split(args.scratch_args)),
            "fine-tune": train_command(corpus, workdir / "fine-tune", args.minutes, args.val_seq_length,
                                       ["--init-from", args.base, *shlex.split(args.fine_args)]),
        }
        started = time.monotonic()
        children = {name: subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    for name, command in runs.items()}
        logs = {name: child.communicate()[1] for name, child in children.items()}
        for name, child in children.items():
            if child.returncode != 0:
                print(f"{name} failed ({child.returncode}):\n{logs[name][-3000:]}", file=sys.stderr)
                return 1
        wall = time.monotonic() - started
        manifests = {name: json.loads((workdir / name / "manifest.json").read_text())
                     for name in runs}
        corpus_bytes = corpus.stat().st_size

    print(f"corpus {corpus.name}: {corpus_bytes:,} bytes; base {args.base}; both runs side by side, "
          f"{wall:.0f} s wall")
    for name, command in runs.items():
        metrics = manifests[name]["metrics"]
        print(f"{name}: {' '.join(shlex.quote(part) for part in command[3:])}")
        print(f"  {metrics['steps']:,} steps, {metrics['tokens_per_second']:,.0f} tokens/s, "
              f"{len(metrics['history'])} validations")
        if name == "fine-tune":
            print(f"  new tokens: {manifests[name]['corpus'].get('new_tokens')}")
    print(f"\n{'minutes':>8} {'scratch':>9} {'fine-tune':>10}   (best validation loss, nats/token)")
    for mark in marks:
        # The last validation comes just after the time limit, when the epoch cut short by it is scored.
        seconds = float("inf") if mark >= args.minutes else mark * 60
        row = [best_by(manifests[name]["metrics"]["history"], seconds) for name in runs]
        print(f"{mark:>8g} " + " ".join(f"{'-' if loss is None else f'{loss:.4f}':>{width}}"
                                         for loss, width in zip(row, (9, 10))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
