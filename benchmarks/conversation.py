"""Conversations: carrying the model's state from turn to turn, against reading the whole conversation again.

Each turn the person says ``--said`` characters and the model answers with
``--length`` tokens. "carried" is ``Conversation.say``, which reads only the
turn's own text from the state the last turn left; "re-read" is what a loop
without state must do, ``TextModel.generate`` on the whole conversation so
far. The model is untrained: speed does not depend on the weights.

    python benchmarks/conversation.py                       # 2x256 char model, 20 turns
    python benchmarks/conversation.py --units 16 --turns 3 --length 10   # a smoke run
"""

from __future__ import annotations

import argparse
import time
import warnings

from generation import ALPHABET, add_model_arguments, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--said", type=int, default=100, help="characters the person says per turn")
    parser.add_argument("--length", type=int, default=200, help="tokens the model answers per turn")
    args = parser.parse_args()

    from textgen.tokenization.tokenizer import UnknownTokenWarning

    # An untrained model draws [UNK] now and then, which "re-read" then reads back as text: no news.
    warnings.simplefilter("ignore", UnknownTokenWarning)
    model = build_model(args.units, args.layers, args.embedding_dim, ALPHABET)
    said = ("To be, or not to be, that is the question: " * (args.said // 40 + 1))[:args.said]
    conversation = model.conversation(length=args.length, temperature=0.8, seed=1)
    # Trace and warm up both paths, outside the timings: the first turn reads from the zero state, later ones on.
    "".join(conversation.say(said))
    "".join(conversation.say(said))
    model.generate(conversation.text, length=args.length, seed=1)
    conversation.reset()
    print(f"model: {args.layers}x{args.units} LSTM, embedding {args.embedding_dim}; each turn {args.said} characters "
          f"said, {args.length} tokens answered")
    print(f"{'turn':>4} {'conversation chars':>18} {'carried s':>10} {'re-read s':>10} {'re-read/carried':>15}")
    totals = [0.0, 0.0]
    for turn in range(1, args.turns + 1):
        before = conversation.text + said
        began = time.perf_counter()
        "".join(conversation.say(said))
        carried = time.perf_counter() - began
        began = time.perf_counter()
        model.generate(before, length=args.length, seed=1)
        reread = time.perf_counter() - began
        totals[0] += carried
        totals[1] += reread
        print(f"{turn:>4} {len(before):>18,} {carried:>10.3f} {reread:>10.3f} {reread / carried:>14.2f}x")
    print(f"total {'':>17} {totals[0]:>10.3f} {totals[1]:>10.3f} {totals[1] / totals[0]:>14.2f}x")


if __name__ == "__main__":
    main()
