"""The error edge of the command line: library errors become one line and a documented exit code, here only.

Exit codes: 0 success, 1 runtime error, 2 usage error, 75 a distributed run
lost a worker, 130 interrupted (the code of a ``TextgenError`` is its own,
see ``textgen.errors``). Warnings the library raises are shown on stderr the
moment they are raised, not when the command ends: a warning about a
checkpoint matters before hours of training, not after them.
"""

from __future__ import annotations

import contextlib
import warnings

import click

EXIT_INTERRUPTED = 130


@contextlib.contextmanager
def library_errors():
    """Turn library errors into one-line messages with their exit codes, here and only here."""
    from textgen.errors import TextgenError

    def show(message, category, filename, lineno, file=None, line=None):
        # textgen's own warnings are UserWarnings; other libraries' deprecation notes are not for users.
        if issubclass(category, UserWarning):
            click.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():  # restores the filters and ``showwarning`` on the way out
        warnings.simplefilter("always")
        warnings.showwarning = show
        try:
            yield
        except TextgenError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = exc.exit_code
            raise error from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
