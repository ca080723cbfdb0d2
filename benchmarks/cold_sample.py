"""Time from starting ``textgen sample`` in a fresh process to its first generated character, and to its end.

    python benchmarks/cold_sample.py                          # the figures in BENCHMARKS.md
    python benchmarks/cold_sample.py --model models/tiny --length 20 --repeats 1

Each repeat starts a new process (Python, TensorFlow, the model and the
compiled generation loop all load from nothing but the operating system's file
cache) and reads its stdout as it arrives. The prompt is echoed first, before
anything is generated, so the first *generated* character is the one after it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def one_run(command: list[str], prompt: str) -> tuple[float, float, float, str]:
    """Seconds to the first byte of stdout, to the first generated character, and to the end; and the text."""
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    received = b""
    first_byte = first_generated = None
    prompt_bytes = len(prompt.encode("utf-8"))
    while chunk := os.read(child.stdout.fileno(), 4096):
        now = time.monotonic() - started
        received += chunk
        first_byte = first_byte if first_byte is not None else now
        if first_generated is None and len(received) > prompt_bytes:
            first_generated = now
    if child.wait() != 0:
        raise SystemExit(f"the command failed: {' '.join(command)}")
    return first_byte, first_generated, time.monotonic() - started, received.decode("utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    command = [sys.executable, "-m", "textgen", "sample", args.model, "--prompt", args.prompt,
               "--length", str(args.length), "--seed", "1"]
    print(f"$ textgen sample {args.model} --prompt {args.prompt!r} --length {args.length} --seed 1")
    print(f"{'run':>4} {'first byte':>11} {'first generated':>16} {'end':>7}   (seconds)")
    runs = []
    for repeat in range(args.repeats):
        first_byte, first_generated, end, text = one_run(command, args.prompt)
        runs.append((first_byte, first_generated, end))
        print(f"{repeat + 1:>4} {first_byte:>11.2f} {first_generated:>16.2f} {end:>7.2f}")
    medians = [statistics.median(column) for column in zip(*runs)]
    print(f"{'median':>6} {medians[0]:>9.2f} {medians[1]:>16.2f} {medians[2]:>7.2f}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
