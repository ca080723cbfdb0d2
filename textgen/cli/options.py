"""The option types of the ``textgen`` commands: durations, byte sizes and comma-separated lists."""

from __future__ import annotations

import re

import click

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*$")
_BYTE_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(?:([kmgt])(i?))?b?\s*$", re.IGNORECASE)


class Duration(click.ParamType):
    """A time span: ``90`` or ``90s`` (seconds), ``15m``, ``2h``; returned in seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        match = _DURATION.match(str(value))
        if not match or float(match.group(1)) <= 0:
            self.fail(f"expected a positive duration such as 90s, 15m or 2h. Received: {value!r}", param, ctx)
        return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


class ByteSize(click.ParamType):
    """A number of bytes: ``500000``, ``100k``, ``100M``, ``2G`` (powers of 1000), ``64MiB`` (of 1024)."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = _BYTE_SIZE.match(str(value))
        if match:
            unit, binary = (match.group(2) or "").lower(), bool(match.group(3))
            size = int(float(match.group(1)) * (1024 if binary else 1000) ** " kmgt".index(unit or " "))
            if size >= 1:
                return size
        self.fail(f"expected a positive size such as 500000, 100M or 2G. Received: {value!r}", param, ctx)


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
