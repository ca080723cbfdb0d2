"""The scaling study: which model and recipe give the lowest validation loss for a corpus and a time budget.

    python benchmarks/scaling.py run --corpus tinyshakespeare --budgets 2,5 --candidates fixed,2x256-e64-b32
    python benchmarks/scaling.py run --corpus kjv --budgets 2           # the King James Bible (Debian's bible-kjv)
    python benchmarks/scaling.py pending --corpus python --budgets 2,5,15,60 --candidates all
    python benchmarks/scaling.py report --plots                        # a table and a plot per corpus

Each run is ``textgen train CORPUS --max-time BUDGET`` as a user runs it, alone
on the machine: the budget counts the whole run from its first step, its
validations and checkpoints included, and the loss is the run's best
validation loss on the corpus's last 10%, in windows of 256 tokens (one
window length for every run, so that every loss compares).

A candidate is a model and a recipe (``CANDIDATES``), every setting the
budget preset could choose given or left at textgen's default, never to the
preset. Every candidate but ``fixed`` uses ``--schedule cosine``, whose
learning rate decays to the time limit, so a budget needs a run of its own. ``fixed`` is textgen's
recipe before the study (2x256, embedding 64, batch 32, a constant rate): its
budgets are one run continued by ``--resume`` from one budget to the next,
which is exactly the run that would have been stopped at the longer budget
(exact resume), at the cost of the longest budget alone.

Results are appended to ``benchmarks/scaling/results.jsonl``, one line a run.
A run already recorded (the same corpus sha256, candidate, budget and seed) is
skipped, so the study can be continued over several days. Creating the file
``PAUSE`` in the work folder holds the next run until it is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from textgen.model.settings import ModelConfig

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "scaling" / "results.jsonl"
PLOT = HERE.parent / "docs" / "scaling" / "loss-by-budget.png"

# Options every run shares: a loss on the same held-out windows, and no stop but the time limit. Checkpoints
# come every 1,000 steps instead of 500 (and still at every epoch end).
COMMON = ["--val-seq-length", "256", "--patience", "0", "--epochs", "100000", "--checkpoint-every", "1000"]

# name -> textgen train options. Each "LxU" names the layers and units, "eE" the embedding, "bB" the batch.
CANDIDATES = {
    "fixed": ["--schedule", "constant"],
    "2x128-e64-b32": ["--schedule", "cosine", "--units", "128"],
    "2x256-e64-b32": ["--schedule", "cosine"],
    "2x256-e64-b64": ["--schedule", "cosine", "--batch-size", "64"],
    "2x384-e96-b32": ["--schedule", "cosine", "--units", "384", "--embedding-dim", "96", "--learning-rate", "0.003"],
    "2x384-e96-b32-d0.1": ["--schedule", "cosine", "--units", "384", "--embedding-dim", "96",
                           "--learning-rate", "0.003", "--dropout", "0.1"],
    "2x384-e96-b32-d0.2": ["--schedule", "cosine", "--units", "384", "--embedding-dim", "96",
                           "--learning-rate", "0.003", "--dropout", "0.2"],
    "2x384-e96-b64": ["--schedule", "cosine", "--units", "384", "--embedding-dim", "96", "--batch-size", "64",
                      "--learning-rate", "0.003"],
    "2x512-e128-b64": ["--schedule", "cosine", "--units", "512", "--embedding-dim", "128", "--batch-size", "64",
                       "--learning-rate", "0.002"],
    "2x512-e128-b64-d0.2": ["--schedule", "cosine", "--units", "512", "--embedding-dim", "128", "--batch-size", "64",
                            "--learning-rate", "0.002", "--dropout", "0.2"],
    "3x512-e128-b64": ["--schedule", "cosine", "--layers", "3", "--units", "512", "--embedding-dim", "128",
                       "--batch-size", "64", "--learning-rate", "0.002"],
    "2x768-e128-b64": ["--schedule", "cosine", "--units", "768", "--embedding-dim", "128", "--batch-size", "64",
                       "--learning-rate", "0.0015"],
    # One setting at a time away from 2x256-e64-b32: the learning rate, the window, the batch, depth and embedding.
    "2x256-e64-b32-lr0.008": ["--schedule", "cosine", "--learning-rate", "0.008"],
    "2x256-e64-b32-lr0.002": ["--schedule", "cosine", "--learning-rate", "0.002"],
    "2x256-e64-b32-s50": ["--schedule", "cosine", "--seq-length", "50"],
    "2x256-e64-b32-s200": ["--schedule", "cosine", "--seq-length", "200"],
    "2x256-e64-b16": ["--schedule", "cosine", "--batch-size", "16"],
    "3x256-e64-b32": ["--schedule", "cosine", "--layers", "3"],
    "1x512-e64-b32": ["--schedule", "cosine", "--layers", "1", "--units", "512"],
    "2x256-e128-b32": ["--schedule", "cosine", "--embedding-dim", "128"],
}
CHAINED = {"fixed"}

KJV_RANGE = "Gen1:1-Rev22:21"


def corpus_file(name: str, workdir: Path) -> Path | str:
    """The corpus a run trains on: ``kjv`` is written out by Debian's ``bible`` command; anything else is passed on."""
    if name != "kjv":
        return name
    path = workdir / "kjv.txt"
    if not path.exists():
        if shutil.which("bible") is None:
            sys.exit("the kjv corpus needs Debian's bible-kjv package (apt-get install bible-kjv)")
        text = subprocess.run(["bible", "-l0", KJV_RANGE], capture_output=True, text=True, check=True).stdout
        path.write_text(text, encoding="utf-8")
    return path


def corpus_identity(corpus: Path | str) -> tuple[int, str]:
    """(bytes, sha256) of the corpus as textgen reads it."""
    from textgen.data.corpus import open_corpus

    opened = open_corpus([str(corpus)])
    return opened.total_bytes, opened.sha256()


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_key(record: dict) -> tuple:
    return record["corpus_sha256"], record["candidate"], record["budget_minutes"], record["seed"]


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def train(corpus, out: Path, candidate: str, minutes: float, seed: int, resume: bool) -> dict:
    """One ``textgen train`` run (or a continued one): its metrics, and the settings its model directory records."""
    command = [sys.executable, "-m", "textgen", "train", str(corpus), "--out", str(out), "--max-time",
               f"{minutes * 60:g}", "--json"]
    command += ["--resume"] if resume else ["--overwrite", "--seed", str(seed), *COMMON, *CANDIDATES[candidate]]
    started = time.monotonic()
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"textgen train failed ({child.returncode}): {' '.join(command)}\n{child.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    settings = json.loads((out / "config.json").read_text(encoding="utf-8"))
    return {"metrics": manifest["metrics"], "wall_seconds": round(time.monotonic() - started, 1),
            "settings": {**settings["model"], **settings["training"]},
            "parameters": ModelConfig.from_dict(settings["model"]).parameter_count()}


def wait_while_paused(workdir: Path) -> None:
    while (workdir / "PAUSE").exists():
        time.sleep(5)


def record_for(args, corpus_name: str, identity, candidate: str, minutes: float, outcome: dict, chained: bool):
    metrics = outcome["metrics"]
    return {
        "corpus": corpus_name, "corpus_bytes": identity[0], "corpus_sha256": identity[1],
        "candidate": candidate, "options": CANDIDATES[candidate], "budget_minutes": minutes, "seed": args.seed,
        "chained": chained, "best_val_loss": round(metrics["best"]["val_loss"], 5),
        "best_step": metrics["best"]["step"], "steps": metrics["steps"], "tokens": metrics["tokens"],
        "tokens_per_second": round(metrics["tokens_per_second"]), "seconds": round(metrics["seconds"], 1),
        "stop_reason": metrics.get("stop_reason"), "parameters": outcome["parameters"],
        "settings": outcome["settings"],  # as the model directory records them: what the run really trained
        "wall_seconds": outcome["wall_seconds"],
        "history": [[round(h["seconds"], 1), h["step"], round(h["val_loss"], 5)] for h in metrics["history"]],
        "load_before": round(os.getloadavg()[0], 2), "textgen": commit(),
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def pending(args, identity) -> list[tuple[str, float]]:
    done = {run_key(record) for record in load_results(args.results)}
    return [(candidate, minutes) for minutes in args.budgets for candidate in args.candidates
            if (identity[1], candidate, minutes, args.seed) not in done]


def command_run(args) -> int:
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = corpus_file(args.corpus, args.workdir)
    identity = corpus_identity(corpus)
    todo = pending(args, identity)
    print(f"{args.corpus}: {identity[0]:,} bytes; {len(todo)} runs to make", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for candidate, minutes in todo:
        wait_while_paused(args.workdir)
        out = args.workdir / f"{Path(args.corpus).name}-{candidate}-s{args.seed}"
        if candidate in CHAINED:
            # Continue the chain's run when it stopped at the longest recorded budget below this one.
            previous = [record for record in load_results(args.results)
                        if (record["corpus_sha256"], record["candidate"], record["seed"]) == (identity[1], candidate,
                                                                                              args.seed)
                        and record["budget_minutes"] < minutes]
            last = max(previous, key=lambda record: record["budget_minutes"], default=None)
            resume = last is not None and (out / "manifest.json").exists() and json.loads(
                (out / "manifest.json").read_text())["metrics"]["steps"] == last["steps"]
        else:
            resume = False
            out = out.with_name(f"{out.name}-{minutes:g}m")
        print(f"  {candidate} {minutes:g} min{' (continued)' if resume else ''} ...", end=" ", flush=True)
        outcome = train(corpus, out, candidate, minutes, args.seed, resume)
        record = record_for(args, Path(args.corpus).name, identity, candidate, minutes, outcome, resume)
        with args.results.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        print(f"{record['best_val_loss']:.4f} after {record['steps']:,} steps, "
              f"{record['tokens_per_second']:,} tokens/s, {record['wall_seconds']:.0f} s", flush=True)
        if candidate not in CHAINED and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return 0


def command_pending(args) -> int:
    identity = corpus_identity(corpus_file(args.corpus, args.workdir))
    todo = pending(args, identity)
    for candidate, minutes in todo:
        print(f"{candidate} {minutes:g}")
    print(f"{len(todo)} runs, about {sum(minutes for _, minutes in todo):g} minutes of training")
    return 0


def command_report(args) -> int:
    """A table per corpus (candidates by budget) and a plot of loss against budget."""
    records = load_results(args.results)
    corpora = sorted({record["corpus"] for record in records}, key=lambda name: min(
        r["corpus_bytes"] for r in records if r["corpus"] == name))
    panels = []
    for corpus in corpora:
        rows = [record for record in records if record["corpus"] == corpus]
        budgets = sorted({record["budget_minutes"] for record in rows})
        names = [name for name in CANDIDATES if any(record["candidate"] == name for record in rows)]
        runs: dict[tuple, list[dict]] = {}
        for record in rows:  # a candidate run more than once at a budget shows every run
            runs.setdefault((record["candidate"], record["budget_minutes"]), []).append(record)
        print(f"\n{corpus} ({rows[0]['corpus_bytes']:,} bytes): best validation loss, nats/token "
              f"(tokens/s); bold: the best at that budget")
        print("| candidate | parameters | " + " | ".join(f"{b:g} min" for b in budgets) + " |")
        print("|---|---|" + "---|" * len(budgets))
        best = {b: min((r["best_val_loss"] for r in rows if r["budget_minutes"] == b)) for b in budgets}
        for name in names:
            cells = []
            for budget in budgets:
                shown = []
                for record in runs.get((name, budget), []):
                    mark = "**" if record["best_val_loss"] == best[budget] else ""
                    shown.append(f"{mark}{record['best_val_loss']:.4f}{mark} ({record['tokens_per_second']:,})")
                cells.append(", ".join(shown))
            parameters = next((r["parameters"] for r in rows if r["candidate"] == name and r["parameters"]), None)
            print(f"| {name} | {parameters or 0:,} | " + " | ".join(cells) + " |")
        panels.append((corpus, rows, names))
    if args.plots and panels:
        plot(panels)
    return 0


def plot(panels: list[tuple[str, list[dict], list[str]]]) -> None:
    """One figure, ``PLOT``: a panel per corpus (its name, its records, its candidates), loss against budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure, all_axes = plt.subplots(len(panels), 1, figsize=(7, 4.5 * len(panels)), squeeze=False)
    for (corpus, rows, names), axes in zip(panels, all_axes[:, 0]):
        _plot_panel(axes, plt, corpus, rows, names)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=100)
    plt.close(figure)


def _plot_panel(axes, plt, corpus: str, rows: list[dict], names: list[str]) -> None:
    # A candidate has the same colour in every panel: its place in CANDIDATES.
    places = {name: place for place, name in enumerate(CANDIDATES)}
    for index, name in enumerate(names):
        points = sorted((r["budget_minutes"], r["best_val_loss"]) for r in rows if r["candidate"] == name)
        colour = plt.cm.tab20(places.get(name, index) % 20)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name, color=colour,
                  linestyle="--" if name == "fixed" else "-")
    axes.set_xscale("log")
    budgets = sorted({r["budget_minutes"] for r in rows})
    axes.set_xticks(budgets, [f"{budget:g}" for budget in budgets])
    axes.minorticks_off()
    axes.set_xlabel("time budget (minutes, log scale)")
    axes.set_ylabel("best validation loss (nats/token)")
    axes.set_title(f"{corpus}: validation loss by time budget")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "pending"):
        each = sub.add_parser(name)
        each.add_argument("--corpus", required=True, help="A named corpus, a file, or kjv.")
        each.add_argument("--budgets", required=True, help="Minutes, comma-separated, e.g. 2,5,15,60.")
        each.add_argument("--candidates", default="all", help=f"Comma-separated, or all: {', '.join(CANDIDATES)}.")
        each.add_argument("--seed", type=int, default=1)
        each.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "textgen-scaling")
        each.add_argument("--keep", action="store_true", help="Keep each run's model directory.")
    report = sub.add_parser("report")
    report.add_argument("--plots", action="store_true", help=f"Also draw {PLOT}, a panel per corpus.")
    for each in sub.choices.values():
        each.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.command in ("run", "pending"):
        args.budgets = [float(budget) for budget in args.budgets.split(",")]
        args.candidates = list(CANDIDATES) if args.candidates == "all" else args.candidates.split(",")
        unknown = [name for name in args.candidates if name not in CANDIDATES]
        if unknown:
            parser.error(f"unknown candidates: {', '.join(unknown)}")
    return {"run": command_run, "pending": command_pending, "report": command_report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
