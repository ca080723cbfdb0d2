"""Fine-tuning a trained model against training from scratch, at equal wall-clock time.

    python benchmarks/fine_tuning.py --base shakespeare --corpus kjv.txt        # the figures in BENCHMARKS.md
    python benchmarks/fine_tuning.py --base python --corpus textgen-source
    python benchmarks/fine_tuning.py --base models/tiny --corpus my.txt --marks 0.1,0.2  # smoke

Two streams of ``textgen train`` commands run at the same time on the same
corpus, so that both see the same machine:

* scratch: one new model trained for the last mark's time, with the settings
  a user would pick for a time budget (the defaults and ``--preset budget``,
  or ``--scratch-args``); its loss at each earlier mark is the best of the
  validations it had made by then (one at each epoch's end);
* fine-tune: ``--init-from BASE``, one run per mark, one after another, each
  stopped by ``--max-time`` at that mark (textgen's fine-tuning defaults and
  ``--preset budget``, or ``--fine-args``), so each is what a user gets who
  fine-tunes for that long.

Both validate on the same held-out text (the last 10% of the corpus) in
windows of ``--val-seq-length`` tokens, so their losses compare.
``textgen-source`` as the corpus stands for textgen's own Python files,
gathered into one file.
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
    parser.add_argument("--marks", default="1,2,5,10", help="Minutes of training at which the losses are compared.")
    parser.add_argument("--val-seq-length", type=int, default=256)
    parser.add_argument("--scratch-args", default="--preset budget", help="Extra textgen train options, scratch.")
    parser.add_argument("--fine-args", default="--preset budget", help="Extra textgen train options, fine-tuning.")
    parser.add_argument("--workdir", help="Where the model directories go (default: a temporary folder).")
    args = parser.parse_args()
    marks = [float(mark) for mark in args.marks.split(",")]

    with tempfile.TemporaryDirectory() as scratch_dir:
        workdir = Path(args.workdir or scratch_dir)
        workdir.mkdir(parents=True, exist_ok=True)
        corpus = textgen_source(workdir) if args.corpus == "textgen-source" else Path(args.corpus)
        scratch = train_command(corpus, workdir / "scratch", marks[-1], args.val_seq_length,
                                shlex.split(args.scratch_args))
        fine = {mark: train_command(corpus, workdir / f"fine-tune-{mark:g}", mark, args.val_seq_length,
                                    ["--init-from", args.base, *shlex.split(args.fine_args)]) for mark in marks}
        started = time.monotonic()
        scratch_child = subprocess.Popen(scratch, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for mark, command in fine.items():
            done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode != 0:
                scratch_child.kill()
                print(f"fine-tune {mark:g} failed ({done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
                return 1
        scratch_log = scratch_child.communicate()[1]
        if scratch_child.returncode != 0:
            print(f"scratch failed ({scratch_child.returncode}):\n{scratch_log[-3000:]}", file=sys.stderr)
            return 1
        wall = time.monotonic() - started
        scratch_metrics = json.loads((workdir / "scratch" / "manifest.json").read_text())["metrics"]
        fine_manifests = {mark: json.loads((workdir / f"fine-tune-{mark:g}" / "manifest.json").read_text())
                          for mark in marks}
        corpus_bytes = corpus.stat().st_size

    print(f"corpus {corpus.name}: {corpus_bytes:,} bytes; base {args.base}; {wall:.0f} s wall")
    print(f"scratch: {' '.join(shlex.quote(part) for part in scratch[3:])}")
    minutes = ", ".join(f"{record['seconds'] / 60:.1f}" for record in scratch_metrics["history"])
    print(f"  {scratch_metrics['steps']:,} steps, {scratch_metrics['tokens_per_second']:,.0f} tokens/s, "
          f"validations at minutes {minutes}")
    print(f"fine-tune: {' '.join(shlex.quote(part) for part in fine[marks[-1]][3:])} (and shorter --max-time)")
    print(f"  new tokens: {fine_manifests[marks[-1]]['corpus'].get('new_tokens')}")
    print(f"\n{'minutes':>8} {'scratch':>9} {'fine-tune':>10} {'steps':>6}   (best validation loss, nats/token)")
    for mark in marks:
        # The scratch run's last validation comes just after its time limit, scoring the epoch it cut short.
        seconds = float("inf") if mark == marks[-1] else mark * 60
        scratch_loss = best_by(scratch_metrics["history"], seconds)
        metrics = fine_manifests[mark]["metrics"]
        shown = "-" if scratch_loss is None else f"{scratch_loss:.4f}"
        print(f"{mark:>8g} {shown:>9} {metrics['best']['val_loss']:>10.4f} {metrics['steps']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
