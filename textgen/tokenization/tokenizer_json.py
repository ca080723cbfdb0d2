"""The tokenizer.json file, read without trusting it.

textgen writes tokenizer.json into model directories and checkpoints, and
reads it back from them. Those may come from anyone, so the read accepts only
the structures ``TextTokenizer`` writes: the exact top-level settings, a
[UNK] token at id 0, ids that run from 0 to the vocabulary size, and one of the
three model and pre-tokenizer pairs (one per level, with the patterns of
``textgen.tokenization.rules``). Anything else is refused with a one-line
``TokenizerError`` before the Hugging Face backend parses it.
"""

import json
import os

import tokenizers

from textgen.errors import TokenizerError
from textgen.config import MAX_VOCAB
from textgen.tokenization.rules import BPE_PATTERN, UNK, UNK_ID, WORD_PATTERN

MAX_JSON_CHARS = 256 * 1024 * 1024


def read_tokenizer_json(path) -> str:
    """The text of a tokenizer file, read no further than the largest one accepted."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(MAX_JSON_CHARS + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"cannot read tokenizer file {os.fspath(path)}: {exc}") from None
    return text


def parse_tokenizer_json(text: str) -> tuple[tokenizers.Tokenizer, str]:
    """The backend and level of tokenizer.json text, accepting only what textgen writes."""
    if len(text) > MAX_JSON_CHARS:
        raise TokenizerError(f"tokenizer.json is too large. Received: length={len(text)}")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TokenizerError(f"tokenizer.json is not valid JSON: {exc}") from None
    level = _checked_level(data)
    try:
        # The backend parses the checked data re-serialized, never the text
        # itself, so it cannot read duplicate keys differently from json.loads.
        backend = tokenizers.Tokenizer.from_str(json.dumps(data))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic is a BaseException, not an Exception
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise TokenizerError(f"tokenizer.json cannot be loaded: {type(exc).__name__}: {reason}") from exc
    return backend, level


def _reject(what: str):
    raise TokenizerError(f"tokenizer.json is not one textgen writes: {what}")


def _canonical(value) -> str:
    """JSON text that tells false from 0 and 1 from 1.0, for exact comparisons."""
    return json.dumps(value, sort_keys=True)


def _check_fields(section: str, mapping, fixed: dict, free: set, required: set) -> None:
    """Reject unknown or missing keys, and fixed fields with any other value."""
    if not isinstance(mapping, dict):
        _reject(f"{section} is not an object")
    for key in mapping:
        if key not in fixed and key not in free:
            _reject(f"{section} has an unexpected key {key[:50]!r}")
    for key in required - set(mapping):
        _reject(f"{section} has no {key!r}")
    for key, value in fixed.items():
        if key in mapping and _canonical(mapping[key]) != _canonical(value):
            _reject(f"{section}.{key} is {_canonical(mapping[key])[:80]}, not {_canonical(value)}")


def _split(pattern: str) -> str:
    return _canonical({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False})


def _checked_level(data) -> str:
    """The level of parsed tokenizer.json data that is exactly what ``textgen.tokenization.tokenizer`` writes."""
    top_fixed = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
                 "normalizer": None, "post_processor": None, "decoder": {"type": "Fuse"}}
    _check_fields("tokenizer", data, top_fixed, {"pre_tokenizer", "model"}, set(top_fixed) | {"model"})
    model, pre_tokenizer = data["model"], _canonical(data.get("pre_tokenizer"))
    model_type = model.get("type") if isinstance(model, dict) else None
    levels = {("BPE", _canonical(None)): "char", ("WordLevel", _split(WORD_PATTERN)): "word",
              ("BPE", _split(BPE_PATTERN)): "bpe"}
    level = levels.get((model_type, pre_tokenizer)) if isinstance(model_type, str) else None
    if level is None:
        _reject(f"model type {_canonical(model_type)[:50]} with pre_tokenizer {pre_tokenizer[:100]}")
    if level == "word":
        _check_fields("model", model, {"type": "WordLevel", "unk_token": UNK}, {"vocab"}, {"vocab", "unk_token"})
    else:
        # Missing optional fields are fine: the backend's defaults are these values.
        bpe_fixed = {"type": "BPE", "dropout": None, "unk_token": UNK, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
        _check_fields("model", model, bpe_fixed, {"vocab", "merges"}, {"vocab", "merges", "unk_token"})
    vocab, merges = model["vocab"], model.get("merges", [])
    if not isinstance(vocab, dict) or len(vocab) > MAX_VOCAB:
        _reject(f"model.vocab is not an object of at most {MAX_VOCAB} tokens")
    ids = vocab.values()
    if any(type(token_id) is not int for token_id in ids) or set(ids) != set(range(len(vocab))):
        _reject("the token ids are not exactly 0 to vocab_size - 1")
    if vocab.get(UNK) != UNK_ID or "" in vocab:
        _reject(f"{UNK} is not token 0, or a token is empty")
    if level == "char" and (merges != [] or any(len(token) != 1 for token in vocab if token != UNK)):
        _reject("a char-level token is longer than one character")
    if not isinstance(merges, list) or len(merges) >= len(vocab) or not all(
            isinstance(merge, list) and len(merge) == 2 and all(isinstance(part, str) for part in merge)
            for merge in merges):
        _reject("model.merges is not a list of token pairs, fewer than the tokens")
    return level
