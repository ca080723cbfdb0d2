"""The commands that use a trained model: ``sample``, ``evaluate``, ``export``, ``info`` and ``models``.

MODEL_DIR is a model directory, or the name of a model shipped with textgen
(``textgen models`` lists them); an existing path wins over a name.

Each is thin over ``textgen.text_model`` or ``textgen.model_dir``, imported
when the command runs. Generated text goes to stdout; everything else to stderr.
"""

from __future__ import annotations

import json

import click

from textgen.cli.completion import corpus_inputs, model_directories
from textgen.cli.edge import library_errors
from textgen.cli.options import setting_option
from textgen.config import SEED_MAX, SampleConfig, draw_seed
from textgen.data.corpus import ERROR_POLICIES


@click.command()
@click.argument("model_dir", type=click.Path(), shell_complete=model_directories)
@click.option("--prompt", "-p", "prompts", multiple=True,
              help="Text to continue (repeatable: every prompt is sampled; default: the start of a line).")
@click.option("--prompt-file", type=click.Path(dir_okay=False),
              help="A UTF-8 file of prompts, one per line, sampled after any --prompt.")
@setting_option("--length", "-n", settings=SampleConfig, help="Tokens to generate.")
@setting_option("--temperature", "-t", settings=SampleConfig, help="0 means greedy.")
@setting_option("--top-k", settings=SampleConfig, help="Sample among the k likeliest (0: off).")
@setting_option("--top-p", settings=SampleConfig, help="Nucleus sampling mass (1: off).")
@setting_option("--num-samples", settings=SampleConfig,
                help="Samples per prompt; all prompts' samples are generated as one batch.")
@click.option("--stop", multiple=True, help="End a sample before this text (repeatable).")
@click.option("--seed", type=int, help=f"Random seed, 0 to {SEED_MAX} (default: drawn at random and printed).")
@click.option("--format", "output_format", type=click.Choice(["text", "jsonl"]), default="text", show_default=True,
              help="text: the samples as text; jsonl: one JSON object per sample, written as each finishes.")
@click.option("--logprobs", is_flag=True, help="With --format jsonl: list every token with its log-probability.")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write the output to FILE (atomically, once complete) instead of stdout.")
@click.option("--overwrite", is_flag=True, help="Let --output replace an existing file.")
@click.option("--interactive", "-i", is_flag=True,
              help="A prompt loop in the terminal: each line you type is continued (/help lists the commands).")
def sample(model_dir, prompts, prompt_file, length, temperature, top_k, top_p, num_samples, stop, seed,
           output_format, logprobs, output, overwrite, interactive):
    """Generate text from a trained model; the text goes to stdout."""
    _check_combination(interactive, prompts=prompts, prompt_file=prompt_file, num_samples=num_samples, stop=stop,
                       output_format=output_format, logprobs=logprobs, output=output, overwrite=overwrite)
    with library_errors():
        from textgen.cli.sample_output import SampleOutput, write_samples
        from textgen.config import MAX_VOCAB
        from textgen.generation.request import SampleRequest, read_prompt_file

        # Everything is checked before anything is written, even on stderr: the output file and
        # the request first, before the model is read (seconds of TensorFlow), then the request
        # again against the model's vocabulary.
        out = SampleOutput(output, overwrite)
        prompts = list(prompts) + (read_prompt_file(prompt_file) if prompt_file else []) or [""]
        drawn = seed is None
        settings = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=draw_seed() if drawn else seed)
        request = SampleRequest.check(prompts, list(stop), vocab_size=MAX_VOCAB, num_samples=num_samples, **settings)
        from textgen.text_model import load

        model = load(model_dir)
        if interactive:
            from textgen.cli.interactive import converse

            converse(model.conversation(**settings))
            return
        samples = model.stream(prompts, num_samples=num_samples, stop=list(stop), details=True, **settings)
        if drawn:
            click.echo(f"seed: {settings['seed']}", err=True)
        write_samples(samples, request.rows, out, jsonl=output_format == "jsonl", tokens=logprobs)


def _check_combination(interactive, **options):
    """Refuse options that do not go together, as a usage error (exit 2)."""
    if options["logprobs"] and options["output_format"] != "jsonl":
        raise click.UsageError(f"--logprobs needs --format jsonl. Received: format='{options['output_format']}'")
    if interactive:
        defaults = {"prompts": (), "prompt_file": None, "num_samples": 1, "stop": (), "output_format": "text",
                    "logprobs": False, "output": None, "overwrite": False}
        given = [name for name, default in defaults.items() if options[name] != default]
        if given:
            flag = {"prompts": "prompt", "output_format": "format"}.get(given[0], given[0]).replace("_", "-")
            raise click.UsageError(f"--interactive reads its prompts from the terminal and prints to it; it does not "
                                   f"take --{flag}. Received: {flag.replace('-', '_')}={options[given[0]]!r}")


@click.command()
@click.argument("model_dir", type=click.Path(), shell_complete=model_directories)
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Where to write the SavedModel (default: MODEL_DIR/saved_model; needed for a shipped model).")
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
        from textgen import model_info

        if as_json:
            click.echo(json.dumps(model_info.describe(model_dir), indent=2, sort_keys=True))
        else:
            click.echo(model_info.summary(model_dir))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models(as_json):
    """List the models shipped with textgen, usable by name wherever MODEL_DIR is taken."""
    with library_errors():
        from textgen.model_info import shipped_listing

        listing = shipped_listing()
        if as_json:
            click.echo(json.dumps(listing, indent=2, sort_keys=True))
            return
        for entry in listing:
            loss = "not validated" if entry["val_loss"] is None else \
                f"val loss {entry['val_loss']:.4f} nats/token ({entry['val_bits_per_char']:.3f} bits/char)"
            click.echo(f"{entry['name']:<12} {entry['model']}, {entry['bytes'] / 1e6:.1f} MB, {loss}; "
                       f"trained on {entry['corpus']}")
        if not listing:
            click.echo("no models are shipped with this installation", err=True)
