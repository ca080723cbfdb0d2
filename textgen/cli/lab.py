"""The lab commands of ``textgen``: ``inspect``, ``cells``, ``explain``, ``plot`` and ``experiment memory``.

These look inside a trained model, plot how models learned, or compare the
recurrent cells, rather than train, sample or export. Like every command they are thin over the library
(``textgen.lab``) and import it only when they run.
"""

from __future__ import annotations

import json

import click

from textgen.cli.completion import model_directories
from textgen.cli.edge import library_errors
from textgen.cli.options import CommaList, Duration
from textgen.config import CELLS_CHARACTERS, CELLS_MAX_CHARACTERS, SampleConfig, draw_seed
from textgen.model.trace import QUANTITIES  # plain NumPy: --help stays fast


@click.command("inspect")
@click.argument("model_dir", type=click.Path(), shell_complete=model_directories)
@click.option("--prompt", "-p", required=True, help="Text to read; every token of it is recorded.")
@click.option("--continue", "continuation", type=int, default=0, show_default=True,
              help="Also sample this many tokens after the prompt, and record them.")
@click.option("--temperature", "-t", type=float, default=SampleConfig.temperature, show_default=True,
              help="Temperature of the continuation; 0 means greedy.")
@click.option("--seed", type=int, help="Random seed of the continuation (default: drawn at random and printed).")
@click.option("--layer", type=int, default=0, show_default=True, help="Layer the page and PNG show first.")
@click.option("--quantity", type=click.Choice(QUANTITIES),
              help="Gate or state shown first (default: cell state, or hidden state for cells without one).")
@click.option("--unit", type=int, help="Unit shown first (default: the one that varies most over the text).")
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Folder for trace.html, trace.png and trace.json (default: MODEL_DIR/inspect; needed for a "
                   "shipped model).")
@click.option("--overwrite", is_flag=True, help="Replace the report files already in --out.")
def inspect_command(model_dir, prompt, continuation, temperature, seed, layer, quantity, unit, out, overwrite):
    """See inside the model: every layer's gates and states, token by token.

    Writes a self-contained HTML page (the text coloured by one unit, with
    pickers for layer, gate or state, and unit), a PNG heatmap and the raw
    values as JSON. The text that was traced goes to stdout.
    """
    with library_errors():
        from pathlib import Path

        from textgen.lab.inspect import check_destination, select, write_report
        from textgen.model_dir import INSPECT_DIR, derived_output
        from textgen.text_model import load

        model = load(model_dir)
        out = derived_output(Path(model.path), INSPECT_DIR, out)
        check_destination(out, overwrite=overwrite)  # before the work, not after it
        if continuation and seed is None:
            seed = draw_seed()
            click.echo(f"seed: {seed}", err=True)
        trace = model.trace(prompt, continuation=continuation, temperature=temperature, seed=seed)
        chosen = select(trace, layer, quantity, unit)
        paths = write_report(trace, out, layer=chosen.layer, quantity=chosen.quantity, unit=chosen.unit,
                             overwrite=overwrite)
        click.echo("".join(trace.tokens))
        click.echo(f"traced {len(trace.tokens)} tokens ({trace.generated_from} given, "
                   f"{len(trace.tokens) - trace.generated_from} generated) through {len(trace.layers)} "
                   f"{trace.cell} layer(s); showing layer {chosen.layer}, {chosen.quantity}, unit {chosen.unit}",
                   err=True)
        for path in paths.values():
            click.echo(f"wrote {path}", err=True)


@click.command()
@click.argument("model_dir", type=click.Path(), shell_complete=model_directories)
@click.argument("text", nargs=-1)
@click.option("--corpus", metavar="NAME",
              help="Read this corpus instead of TEXT: a named corpus (python, tinyshakespeare), a file, a folder or "
                   "a glob (default: the corpus the model was trained on, if it is here).")
@click.option("--characters", type=int, default=CELLS_CHARACTERS, show_default=True,
              help=f"Characters of the text or corpus to read (at most {CELLS_MAX_CHARACTERS}).")
@click.option("--top", type=int, default=3, show_default=True, help="Units reported per feature.")
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Folder for cells.html and cells.json (default: MODEL_DIR/cells; needed for a shipped model).")
@click.option("--overwrite", is_flag=True, help="Replace the report files already in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object instead of the table.")
def cells(model_dir, text, corpus, characters, top, out, overwrite, as_json):
    """Find the units that track quotes, line position, brackets and other features.

    Reads TEXT (its words joined by spaces), or --corpus, or by default the
    corpus the model was trained on, and correlates every unit of every gate
    and state with each feature, on the first half of the text; the best
    units are checked on the held-out second half and against chance. Prints
    a table (or --json) and writes an HTML page and the JSON report.
    """
    with library_errors():
        from pathlib import Path

        from textgen.lab.cells import render_table
        from textgen.lab.cells_page import write_cells_report
        from textgen.lab.inspect import check_destination
        from textgen.model_dir import CELLS_DIR, CELLS_FILES, derived_output
        from textgen.text_model import load

        model = load(model_dir)
        out = derived_output(Path(model.path), CELLS_DIR, out)
        check_destination(out, overwrite=overwrite, files=CELLS_FILES)  # before the work, not after it
        report = model.find_cells(" ".join(text) if text else None, corpus=corpus, characters=characters, top=top,
                                  progress=lambda line: click.echo(line, err=True))
        paths = write_cells_report(report, out, overwrite=overwrite)
        if as_json:
            click.echo(json.dumps(report.to_dict(), separators=(",", ":"), allow_nan=False))
        else:
            click.echo(render_table(report))
        for path in paths.values():
            click.echo(f"wrote {path}", err=True)


@click.command()
@click.argument("model_dir", type=click.Path(), shell_complete=model_directories)
@click.option("--prompt", "-p", required=True,
              help="Text the model reads; the step explained is one of its tokens.")
@click.option("--position", type=int, default=-1, show_default=True,
              help="Which token of --prompt to explain (0 is the first, -1 the last).")
@click.option("--layer", type=int, default=0, show_default=True, help="Layer of the unit (0 is the first).")
@click.option("--unit", type=int, default=0, show_default=True, help="Unit of that layer whose step is explained.")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as one JSON object.")
def explain(model_dir, prompt, position, layer, unit, as_json):
    """Walk through one unit's step by hand, with the model's own weights and states.

    Prints every weighted sum (with its largest terms), every sigmoid and
    tanh, what share of the long-term memory was kept, what was added, and
    what became the short-term memory.
    """
    with library_errors():
        import dataclasses

        from textgen.lab.explain import explain_step, render
        from textgen.text_model import load

        explanation = explain_step(load(model_dir), prompt, position=position, layer=layer, unit=unit)
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(explanation), sort_keys=True))
        else:
            click.echo(render(explanation))


@click.command()
@click.argument("model_dirs", nargs=-1, required=True, type=click.Path(), metavar="MODEL_DIR...",
                shell_complete=model_directories)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The PNG file to write.")
@click.option("--overwrite", is_flag=True, help="Replace the file at --out.")
def plot(model_dirs, out, overwrite):
    """Plot the learning curves of one or more models into a PNG.

    Two panels: training and validation loss against steps, and against
    wall-clock time; one colour per model.
    """
    with library_errors():
        from textgen.lab.curves import plot_curves, read_curves

        curves = [read_curves(path) for path in model_dirs]
        click.echo(f"wrote {plot_curves(curves, out, overwrite=overwrite)}", err=True)


@click.group()
def experiment():
    """Controlled experiments on the recurrent cells."""


@experiment.command("memory")
@click.option("--distances", type=CommaList(int), default="10,50,100,200", show_default=True,
              help="Dependency distances D, in tokens.")
@click.option("--tasks", type=CommaList(), default="copy,brackets,quote", show_default=True,
              help="Tasks to run, comma-separated: copy, brackets, quote.")
@click.option("--cells", type=CommaList(), default="rnn,gru,lstm", show_default=True,
              help="Cells to compare, comma-separated: rnn, gru, lstm, peephole, cifg.")
@click.option("--seconds-per-run", type=Duration(), default="20s", show_default=True,
              help="CPU time each model trains for (this process, all threads; compiling not counted).")
@click.option("--max-steps", type=int, default=5000, show_default=True, help="Step cap for each model.")
@click.option("--parameters", type=int, default=23_000, show_default=True,
              help="Parameter count every model is sized to, as closely as whole units allow.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Sequences per training step.")
@click.option("--loss", "loss_on", type=click.Choice(["dependent", "all"]), default="dependent", show_default=True,
              help="Train on the dependent positions only, or on every next token.")
@click.option("--forget-bias", type=float,
              help="Initial bias of the gate that keeps the state (lstm forget gate, gru update gate); "
                   "default: the model's own initialisation, U(-1/sqrt(units), 1/sqrt(units)).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of the task data and of every model's initial weights.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="memory-experiment", show_default=True,
              help="Directory for results.json, table.txt and the PNG plots.")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier experiment in --out.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (and the need for matplotlib).")
def memory(distances, tasks, cells, seconds_per_run, max_steps, parameters, batch_size, loss_on, forget_bias, seed,
           out, overwrite, no_plots):
    """Train rnn, gru and lstm on tasks that need a memory of D steps; print the accuracy table.

    Every model has about the same parameter count and trains for the same
    CPU time; accuracy is measured at the position that depends on the
    symbol D tokens earlier. Also measures how the gradient reaching the
    hidden state k steps back shrinks with k. Progress goes to stderr.
    """
    with library_errors():
        from textgen.experiments.memory.experiment import MemorySettings, run_memory_experiment

        settings = MemorySettings(tasks=tuple(tasks), distances=tuple(distances), cells=tuple(cells),
                                  seconds_per_run=seconds_per_run, max_steps=max_steps, parameters=parameters,
                                  batch_size=batch_size, loss_on=loss_on, forget_bias=forget_bias, seed=seed)
        result = run_memory_experiment(settings, out=out, plots=not no_plots, overwrite=overwrite,
                                       progress=lambda line: click.echo(line, err=True))
        click.echo(result["table"])
        click.echo(f"wrote {out}", err=True)
