"""The commands that use a trained model: ``sample``, ``evaluate``, ``export`` and ``info``.

Each is thin over ``textgen.text_model`` or ``textgen.model_dir``, imported
when the command runs. Generated text goes to stdout; everything else to stderr.
"""

from __future__ import annotations

import json

import click

from textgen.cli.completion import corpus_inputs, model_directories
from textgen.cli.edge import library_errors
from textgen.cli.options import setting_option
from textgen.config import SampleConfig, draw_seed
from textgen.data.corpus import ERROR_POLICIES


@click.command()
@click.argument("model_dir", type=click.Path(), shell_complete=model_directories)
@click.option("--prompt", "-p", default="", help="Text to continue (default: start of a line).")
@setting_option("--length", "-n", settings=SampleConfig, help="Tokens to generate.")
@setting_option("--temperature", "-t", settings=SampleConfig, help="0 means greedy.")
@setting_option("--top-k", settings=SampleConfig, help="Sample among the k likeliest (0: off).")
@setting_option("--top-p", settings=SampleConfig, help="Nucleus sampling mass (1: off).")
@setting_option("--num-samples", settings=SampleConfig, help="Samples, generated as one batch.")
@click.option("--stop", multiple=True, help="End a sample before this text (repeatable).")
@click.option("--seed", type=int, help="Random seed (default: drawn at random and printed).")
def sample(model_dir, prompt, length, temperature, top_k, top_p, num_samples, stop, seed):
    """Generate text from a trained model; the text goes to stdout."""
    with library_errors():
        from textgen.text_model import load

        model = load(model_dir)
        if seed is None:
            seed = draw_seed()
            click.echo(f"seed: {seed}", err=True)
        # Text is printed as it is generated; on Ctrl-C what exists so far is
        # printed before exiting with 130.
        shown = [""] * num_samples
        stream = model.stream(prompt, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                              seed=seed, num_samples=num_samples, stop=list(stop))
        if num_samples == 1:
            click.echo(prompt, nl=False)
        try:
            for texts in stream:
                if num_samples == 1:
                    click.echo(texts[0][len(shown[0]):], nl=False)
                shown = texts
        finally:
            if num_samples == 1:
                click.echo("")
            else:
                click.echo("\n\n".join(prompt + text for text in shown))


@click.command()
@click.argument("model_dir", type=click.Path(), shell_complete=model_directories)
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Where to write the SavedModel (default: MODEL_DIR/saved_model); must not exist.")
@click.option("--overwrite", is_flag=True, help="Replace a SavedModel already at --out.")
def export(model_dir, out, overwrite):
    """Export a model as a TensorFlow SavedModel: prompts in, generated text out."""
    with library_errors():
        from textgen.text_model import load

        path = load(model_dir).export(out, overwrite=overwrite)
        click.echo(f"saved {path}; load it with tf.saved_model.load('{path}')", err=True)


@click.command()
@click.argument("model_dir", type=click.Path(), shell_complete=model_directories)
@click.argument("text", nargs=-1, required=True, shell_complete=corpus_inputs)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the TEXT files.")
@click.option("--errors", type=click.Choice(ERROR_POLICIES), default="strict", show_default=True,
              help="What to do with bytes that do not decode.")
def evaluate(model_dir, text, as_json, encoding, errors):
    """Measure a model's loss on TEXT (files, folders, globs or named corpora)."""
    with library_errors():
        from textgen.data.corpus import open_corpus
        from textgen.text_model import load

        model = load(model_dir)
        source = open_corpus(list(text), encoding=encoding, errors=errors)
        result = model.evaluate(source.read_text())
        if as_json:
            click.echo(json.dumps(result, sort_keys=True))
        else:
            click.echo(f"loss {result['loss']:.4f} nats/token, {result['bits_per_char']:.4f} bits/char, "
                       f"perplexity {result['perplexity']:.2f} over {result['tokens']:,} tokens "
                       f"({result['characters']:,} characters)")


@click.command()
@click.argument("model_dir", type=click.Path(), shell_complete=model_directories)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and settings as JSON.")
def info(model_dir, as_json):
    """Describe a model directory: settings, corpus, metrics, versions."""
    with library_errors():
        from textgen import model_dir as directory

        if as_json:
            click.echo(json.dumps(directory.describe(model_dir), indent=2, sort_keys=True))
        else:
            click.echo(directory.summary(model_dir))
