"""The error edge of the command line: library errors become one line and a documented exit code, here only.

Exit codes: 0 success, 1 runtime error, 2 usage error, 75 a distributed run
lost a worker, 130 interrupted (the code of a ``TextgenError`` is its own,
see ``textgen.errors``). Warnings the library raises are shown on stderr.
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

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except TextgenError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = exc.exit_code
            raise error from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        finally:
            for warning in caught:
                if issubclass(warning.category, UserWarning):
                    click.echo(f"warning: {warning.message}", err=True)
