"""What ``textgen sample`` writes, and where: samples as text or as JSON lines, to stdout or to one file.

Text goes out as it is generated: a single sample chunk by chunk after its
prompt, several samples at the end, a blank line between them; a JSON line
as soon as its sample has finished. With ``--output`` the same bytes go to
the file instead, written atomically once complete, never over an existing
file without ``--overwrite``. On Ctrl-C what exists so far still goes to
stdout (the unfinished samples' JSON lines with "stop_reason":
"interrupted"), while a file is not written at all: it would look complete.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import click


class SampleOutput:
    """stdout, written at once; or ``path``, gathered and written atomically by ``finish``."""

    def __init__(self, path, overwrite: bool):
        self.path = Path(path) if path else None
        self.overwrite = overwrite
        self._parts: list[str] = []
        if self.path is not None:
            self._check()

    def _check(self) -> None:
        """Refuse a file that would replace the user's, or a folder that is not there (before any work)."""
        from textgen.errors import SampleFileError
        from textgen.files import refuse_to_overwrite

        refuse_to_overwrite([self.path], overwrite=self.overwrite, error=SampleFileError,
                            hint="pass --overwrite or choose another --output")
        if not self.path.absolute().parent.is_dir():
            raise SampleFileError(f"the folder of the output file does not exist. Received: output='{self.path}'")

    def write(self, text: str) -> None:
        if self.path is None:
            click.echo(text, nl=False)
        else:
            self._parts.append(text)

    def finish(self, complete: bool) -> None:
        """Write the file, if there is one and the output is complete; an incomplete one is dropped."""
        if self.path is None:
            return
        if not complete:
            click.echo(f"{self.path} was not written: the output is incomplete", err=True)
            return
        from textgen.errors import SampleFileError
        from textgen.files import write_atomically

        self._check()  # again: something may have taken the name while the samples were generated
        try:
            write_atomically(self.path, "".join(self._parts).encode("utf-8"))
        except OSError as exc:
            raise SampleFileError(f"could not write the output file: {exc.strerror or exc}. "
                                  f"Received: output='{self.path}'") from None
        click.echo(f"wrote {self.path}", err=True)


def write_samples(stream: Iterable[list], rows: list[str], out: SampleOutput, jsonl: bool, tokens: bool) -> None:
    """Write what ``TextModel.stream(..., details=True)`` yields for ``rows`` (each row's prompt) to ``out``."""
    from textgen.generation.samples import INTERRUPTED

    latest: list = []
    written: set[int] = set()
    streaming_text = not jsonl and len(rows) == 1
    shown = rows[0] if streaming_text else ""

    def json_line(sample) -> str:
        written.add(sample.index)
        return json.dumps(sample.to_dict(tokens=tokens), ensure_ascii=False) + "\n"

    if streaming_text:
        out.write(shown)
    try:
        for latest in stream:
            if jsonl:
                out.write("".join(json_line(sample) for sample in latest if sample.finished
                                  and sample.index not in written))
            elif streaming_text:
                text = latest[0].prompt + latest[0].text
                out.write(text[len(shown):])
                shown = text
    except KeyboardInterrupt:
        _end(out, latest, jsonl, streaming_text,
             [json_line(dataclasses.replace(sample, stop_reason=INTERRUPTED)) for sample in latest
              if sample.index not in written])
        out.finish(complete=False)
        raise
    _end(out, latest, jsonl, streaming_text, [])
    out.finish(complete=True)


def _end(out: SampleOutput, latest: list, jsonl: bool, streaming_text: bool, unfinished: list[str]) -> None:
    """Write what is left once the stream ends or is interrupted: the end of the text, or the last JSON lines."""
    if jsonl:
        out.write("".join(unfinished))
    elif streaming_text:
        out.write("\n")
    elif latest:
        out.write("\n\n".join(sample.prompt + sample.text for sample in latest) + "\n")
