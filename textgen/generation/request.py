"""A generation request: prompts, stop strings and settings, checked and bounded before any work.

Every way of generating builds one first (``TextModel.generate`` and
``stream``, ``textgen sample``, each turn of a ``Conversation``), so whatever
would be refused is refused before anything is allocated, read through the
model or written. Plain Python: the command line reads a prompt file and
checks what it can without loading TensorFlow.
"""

from __future__ import annotations

import dataclasses
import reprlib
from pathlib import Path

from textgen.config import MAX_REQUEST_TOKENS, MAX_SAMPLES, SampleConfig, draw_seed
from textgen.errors import ConfigError, SampleFileError

# Every token covers at least one character at every tokenizer level (a char, a word
# piece, a BPE merge of characters, or one [UNK] for one character or word), so a prompt of
# n characters is at most n tokens, and the budget can be checked before encoding.
# A prompt file longer than this holds more characters than any request may read (a
# character is at most 4 bytes of UTF-8), so only this much of it is ever read.
MAX_PROMPT_FILE_BYTES = 4 * MAX_REQUEST_TOKENS


def _texts(name: str, value, *, what: str) -> tuple[str, ...]:
    """``value`` as a tuple of strings: a string is one; a list or tuple must hold only strings."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"{name} must be {what}. Received: {name}={reprlib.repr(value)}")


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """What to generate: each of ``prompts`` continued ``settings.num_samples`` times, ending at ``stop`` strings.

    Build one with ``check``, which refuses what the model cannot do or what
    would ask too much; its ``settings.seed`` is then always set (drawn if
    it was not given), so a request says everything its samples depend on.
    """

    prompts: tuple[str, ...]
    settings: SampleConfig
    stop: tuple[str, ...] = ()

    @classmethod
    def check(cls, prompt, stop=None, *, vocab_size: int, **settings) -> "SampleRequest":
        """Check a request against a model of ``vocab_size`` tokens; ``settings`` are ``SampleConfig``'s fields."""
        checked = SampleConfig(**settings)
        if checked.top_k > vocab_size:
            raise ConfigError(f"top_k must be at most the vocabulary size ({vocab_size}). "
                              f"Received: top_k={checked.top_k}")
        prompts = _texts("prompt", prompt, what="a string or a non-empty list of strings")
        if not prompts:
            raise ConfigError("prompt must be a string or a non-empty list of strings. Received: prompt=[]")
        stops = () if stop is None else _texts("stop", stop, what="a string or a list of strings")
        rows = len(prompts) * checked.num_samples
        if rows > MAX_SAMPLES:
            raise ConfigError(f"at most {MAX_SAMPLES} rows (prompts x num_samples) per call. Received: rows={rows}")
        # (B, W) prompt ids and (B, T) new ids: an empty prompt still reads one start token.
        size = rows * (max(1, max(len(item) for item in prompts)) + checked.length)
        if size > MAX_REQUEST_TOKENS:
            raise ConfigError(f"a request may span at most {MAX_REQUEST_TOKENS:,} tokens, rows (prompts x "
                              f"num_samples) x (longest prompt + length); ask for fewer or shorter samples. "
                              f"Received: tokens={size}")
        if checked.seed is None:
            checked = dataclasses.replace(checked, seed=draw_seed())
        return cls(prompts, checked, stops)

    @property
    def rows(self) -> list[str]:
        """The prompt of every row, prompt by prompt: each prompt ``num_samples`` times over."""
        return [item for item in self.prompts for _ in range(self.settings.num_samples)]

    def sample_settings(self) -> dict:
        """The settings every sample of this request was drawn with, as plain values (for JSON)."""
        s = self.settings
        return {"length": s.length, "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
                "stop": list(self.stop)}


def read_prompt_file(path) -> list[str]:
    """The prompts in a UTF-8 text file, one per line.

    A final line end is not a prompt of its own, CRLF line ends are fine, and
    an empty line is an empty prompt. The file is refused, before it is read
    into memory, if it is larger or has more lines than a request may take.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PROMPT_FILE_BYTES + 1)
    except OSError as exc:
        raise SampleFileError(f"cannot read the prompt file: {exc.strerror or exc}. Received: prompt_file='{path}'") \
            from None
    if len(data) > MAX_PROMPT_FILE_BYTES:
        raise ConfigError(f"a prompt file may hold at most {MAX_PROMPT_FILE_BYTES:,} bytes. "
                          f"Received: prompt_file='{path}'")
    if not data:
        raise ConfigError(f"the prompt file is empty: it needs one prompt per line. Received: prompt_file='{path}'")
    if data.endswith(b"\n"):
        data = data[:-1]
    lines = data.count(b"\n") + 1
    if lines > MAX_SAMPLES:
        raise ConfigError(f"at most {MAX_SAMPLES} prompts per call. Received: prompts={lines}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleFileError(f"the prompt file is not valid UTF-8 (byte offset {exc.start}). "
                              f"Received: prompt_file='{path}'") from None
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
