"""The option types of the ``textgen`` commands: durations, byte sizes and comma-separated lists."""

from __future__ import annotations

import click

from textgen.config import parse_duration, parse_size
from textgen.errors import ConfigError


class _Parsed(click.ParamType):
    """An option value read by one of ``textgen.config``'s parsers, so the command line and the Python API
    accept the very same spellings; a value it refuses is a usage error."""

    parse = None  # the parser: (value, name) -> the value, or ConfigError

    def convert(self, value, param, ctx):
        try:
            return type(self).parse(value, param.name if param else self.name)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class Duration(_Parsed):
    """A time span: ``90`` or ``90s`` (seconds), ``15m``, ``2h``; returned in seconds."""

    name = "duration"
    parse = staticmethod(parse_duration)


class ByteSize(_Parsed):
    """A number of bytes: ``500000``, ``100k``, ``100M``, ``2G`` (powers of 1000), ``64MiB`` (of 1024)."""

    name = "size"
    parse = staticmethod(parse_size)


class CommaList(click.ParamType):
    """A comma-separated list, ``10,50,100``; items converted by ``item`` (str or int)."""

    name = "list"

    def __init__(self, item=str):
        self.item = item

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        items = [part.strip() for part in str(value).split(",") if part.strip()]
        try:
            return [self.item(part) for part in items]
        except ValueError:
            self.fail(f"expected a comma-separated list of {self.item.__name__} values. Received: {value!r}", param,
                      ctx)


def setting_option(*flags: str, settings, help: str, **extra):
    """A Click option for a settings field: its type and default are the field's own.

    The field is named by the long flag (``--embedding-dim`` sets
    ``embedding_dim`` of ``settings``), so a default lives only in the
    settings class and the command line shows it as it is.
    """
    name = next(flag for flag in flags if flag.startswith("--"))[2:].replace("-", "_")
    default = getattr(settings, name)
    return click.option(*flags, type=type(default), default=default, show_default=True, help=help, **extra)
