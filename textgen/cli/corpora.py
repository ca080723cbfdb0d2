"""``textgen corpora``: the named corpora listed, and one fetched to a file the user then has.

Thin over ``textgen.corpora.catalog`` (plain Python: listing never loads
TensorFlow). The list and nothing else goes to stdout; what was written, and
any download, to stderr.
"""

from __future__ import annotations

import click

from textgen.cli.edge import library_errors
from textgen.corpora import catalog


@click.command()
@click.option("--fetch", "name", type=click.Choice(catalog.names()),
              help="Write this named corpus to the file -o (downloading it first if needed).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="The file --fetch writes.")
@click.option("--overwrite", is_flag=True, help="Replace the file at -o if it exists.")
def corpora(name, out, overwrite):
    """List the named corpora, or fetch one to a file: --fetch NAME -o FILE.

    A fetched file holds exactly the bytes textgen trains on by that name,
    so `textgen train FILE` trains on the same text.
    """
    if name is not None and out is None:
        raise click.UsageError(f"--fetch needs -o FILE, the file to write. Received: fetch={name!r}")
    if out is not None and name is None:
        raise click.UsageError(f"-o names the file --fetch writes; give --fetch NAME too. Received: out={out!r}")
    with library_errors():
        if name is None:
            sizes = {entry: catalog.size(entry) for entry in catalog.names()}
            rows = [(entry, "unknown" if sizes[entry] is None else f"{sizes[entry]:,} bytes", catalog.describe(entry))
                    for entry in catalog.names()]
            widths = [max(len(row[i]) for row in rows + [("name", "size", "")]) for i in range(2)]
            for row in [("name", "size", "description"), *rows]:
                click.echo(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]}".rstrip())
            return
        path = catalog.write_to_file(name, out, overwrite=overwrite)
        click.echo(f"wrote {path}: {name}, {path.stat().st_size:,} bytes", err=True)
