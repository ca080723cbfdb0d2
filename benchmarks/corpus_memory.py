"""Corpora larger than memory: peak RSS of tokenizing and of training, against corpus size.

    python benchmarks/corpus_memory.py --size 200M --size 2G     # the figures in BENCHMARKS.md
    python benchmarks/corpus_memory.py --size 1M --steps 2 --units 4    # a smoke run

For each size, a synthetic corpus is written into a temporary folder (words
drawn with a fixed seed from a fixed Zipf-distributed vocabulary of 5,000 words,
some with a comma or full stop, 12 words a line), then two child processes
run one after the other, each measured by its own ``ru_maxrss`` (``os.wait4``):

* tokenize: train the tokenizer (on its bounded sample) and build the token
  cache, exactly as ``textgen train`` does; reports the cache's tokenizing
  throughput in MB of corpus text per second;
* train: ``textgen.train`` on the corpus for ``--steps`` steps (a small model,
  validation over the whole last 10% included), which finds and reuses the
  cache.

The corpus, the cache and the model are deleted afterwards (unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
WORDS_PER_LINE = 12


def parse_size(text: str) -> int:
    """``200M`` -> 200,000,000 (powers of 1000)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 200M or 2G. Received: {text!r}")
    return int(float(match.group(1)) * 1000 ** " kmgt".index(match.group(2).lower() or " "))


def format_size(size: int) -> str:
    """200,000,000 -> ``200MB``; 300,000 -> ``300kB`` (powers of 1000, as ``--size`` reads them)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:g}{unit}"
    return f"{size}B"


def write_corpus(path: Path, size: int, seed: int = 0) -> None:
    """Write exactly ``size`` bytes of synthetic English-like text to ``path``."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    frequency = 1.0 / np.arange(1, 27)
    words = []
    for rank in range(5000):
        word = "".join(rng.choice(letters, size=int(rng.integers(1, 10)), p=frequency / frequency.sum()))
        word = word.capitalize() if rank % 7 == 0 else word
        words.append(word + ("," if rank % 11 == 0 else "." if rank % 13 == 0 else ""))
    table = np.array(words, dtype=object)
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    written = 0
    with open(path, "wb") as out:
        while written < size:
            drawn = table[rng.choice(len(words), size=WORDS_PER_LINE * 50_000, p=zipf)]
            block = "".join(" ".join(drawn[i:i + WORDS_PER_LINE]) + "\n"
                            for i in range(0, len(drawn), WORDS_PER_LINE)).encode("ascii")
            block = block[: size - written]
            out.write(block)
            written += len(block)


def run_child(args: argparse.Namespace, stage: str, corpus: Path, work: Path) -> dict:
    """Run one stage in a fresh process; return its report and its own peak RSS (its log goes to stderr)."""
    env = {**os.environ, "TEXTGEN_CACHE_DIR": str(work / "cache")}
    command = [sys.executable, __file__, *sys.argv[1:], "--stage", stage, "--corpus", str(corpus),
               "--work", str(work)]
    began = time.monotonic()
    with open(work / f"{stage}.json", "w+b") as report_file:
        process = subprocess.Popen(command, env=env, stdout=report_file)
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the max over all children so far.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            sys.exit(f"the {stage} stage failed with exit code {process.returncode}")
        report_file.seek(0)
        report = json.loads(report_file.read().decode().strip().splitlines()[-1])
    report.update(peak_rss_mb=usage.ru_maxrss / 1024, wall_seconds=time.monotonic() - began)
    return report


def stage_tokenize(args: argparse.Namespace) -> dict:
    from textgen.data.corpus import open_corpus
    from textgen.data.token_cache import open_token_cache
    from textgen.tokenization.tokenizer import TextTokenizer

    corpus = open_corpus(args.corpus)
    began = time.monotonic()
    tokenizer = TextTokenizer.train_on_corpus(corpus, level=args.level, sample_bytes=args.sample_bytes)
    trained = time.monotonic()
    corpus_sha256 = corpus.sha256()
    hashed = time.monotonic()
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    cache = open_token_cache(corpus, tokenizer, corpus_sha256=corpus_sha256, log=log)
    built = time.monotonic()
    return {"bytes": corpus.total_bytes, "tokens": cache.total_tokens, "shards": len(cache.manifest["shards"]),
            "reused": cache.reused, "tokenizer_seconds": trained - began, "hash_seconds": hashed - trained,
            "build_seconds": built - hashed, "mb_per_second": corpus.total_bytes / (built - hashed) / 1e6}


def stage_train(args: argparse.Namespace) -> dict:
    import textgen

    began = time.monotonic()
    model = textgen.train(args.corpus, out=Path(args.work) / "model", tokenizer=args.level,
                          tokenizer_sample_bytes=args.sample_bytes, layers=args.layers, units=args.units,
                          embedding_dim=args.embedding_dim, seq_length=args.seq_length, batch_size=args.batch_size,
                          max_steps=args.steps, val_fraction=args.val_fraction, seed=1, checkpoint_every=None)
    metrics = model.manifest["metrics"]
    return {"seconds": time.monotonic() - began, "steps": metrics["steps"],
            "val_loss": (metrics["best"] or {}).get("val_loss"), "tokens": model.manifest["corpus"]["tokens"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, action="append", help="corpus size, e.g. 200M (repeatable)")
    parser.add_argument("--level", default="char", choices=["char", "word", "bpe"])
    parser.add_argument("--sample-bytes", type=parse_size, default=100_000_000, help="tokenizer sample")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--seq-length", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--workdir", help="where the temporary folders go (default: the system's temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus, cache and model")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        report = {"tokenize": stage_tokenize, "train": stage_train}[args.stage](args)
        print(json.dumps(report))
        return

    rows = []
    for size in args.size or [200_000_000]:
        work = Path(tempfile.mkdtemp(prefix="textgen-corpus-memory-", dir=args.workdir))
        try:
            corpus = work / "corpus.txt"
            began = time.monotonic()
            write_corpus(corpus, size)
            print(f"wrote {size:,} bytes to {corpus} in {time.monotonic() - began:.0f}s", file=sys.stderr)
            tokenized = run_child(args, "tokenize", corpus, work)
            trained = run_child(args, "train", corpus, work)
            rows.append((size, tokenized, trained))
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)

    print(f"{'corpus':>10} {'tokens':>15} {'tokenize_s':>10} {'MB/s':>6} {'peak_rss_tokenize_MB':>20} "
          f"{'train_s':>8} {'steps':>5} {'peak_rss_train_MB':>17}")
    for size, tokenized, trained in rows:
        print(f"{format_size(size):>10} {tokenized['tokens']:>15,} {tokenized['build_seconds']:>10.1f} "
              f"{tokenized['mb_per_second']:>6.1f} {tokenized['peak_rss_mb']:>20,.0f} "
              f"{trained['seconds']:>8.1f} {trained['steps']:>5} {trained['peak_rss_mb']:>17,.0f}")
    print(json.dumps([{"size": size, "tokenize": t, "train": r} for size, t, r in rows]), file=sys.stderr)


if __name__ == "__main__":
    main()
