"""A model directory described: the few lines and the JSON of ``textgen info``, and the list of ``textgen models``.

Everything is read through ``textgen.model_dir``, so a directory is checked
as loading checks it before anything of it is shown. The manifest's free
parts (corpus, metrics, versions) are shown as far as they make sense: a
value of the wrong kind shows as "?".
"""

from __future__ import annotations

from textgen.model_dir import (DATA_FILES, FORMAT, MANIFEST_FILE, read_config, read_manifest, read_settings,
                               shipped_models)


def describe(path) -> dict:
    """A checked directory's settings and manifest as one JSON-ready dict (``textgen info --json``)."""
    path, manifest = read_manifest(path)
    return {"config": read_config(path), "manifest": manifest}


def shipped_listing() -> list[dict]:
    """Each shipped model, checked as loading checks it: name, size on disk, corpus and best validation loss."""
    listing = []
    for name, path in shipped_models().items():
        _, manifest = read_manifest(path)
        settings = read_settings(path)
        best = _section(_section(manifest, "metrics"), "best")
        model = settings.model
        listing.append({
            "name": name, "path": str(path),
            "bytes": sum((path / file).stat().st_size for file in (*DATA_FILES, MANIFEST_FILE)),
            "model": f"{model.layers}x{model.units} {model.cell.upper()}, {settings.tokenizer_level} "
                     f"vocabulary {model.vocab_size}",
            "corpus": _shown(_section(manifest, "corpus").get("description"), str),
            "val_loss": best.get("val_loss"), "val_bits_per_char": best.get("val_bits_per_char")})
    return listing


def summary(path) -> str:
    """A checked directory described in a few lines for people (``textgen info``).

    The settings are validated as loading validates them; the manifest's free
    parts (corpus, metrics, versions) are shown as far as they make sense, and
    a value of the wrong kind shows as "?".
    """
    path, manifest = read_manifest(path)
    settings = read_settings(path)
    model, training = settings.model, settings.training
    metrics, corpus = _section(manifest, "metrics"), _section(manifest, "corpus")
    best = _section(metrics, "best")
    lines = [
        f"model      {model.layers}x{model.units} {model.cell.upper()}, embedding {model.embedding_dim}, "
        f"dropout {model.dropout}",
        f"tokenizer  {settings.tokenizer_level}, vocabulary {model.vocab_size}",
        f"corpus     {_shown(corpus.get('description'), str)}, {_shown(corpus.get('bytes'), int, ',')} bytes, "
        f"{_shown(corpus.get('tokens'), int, ',')} tokens",
        f"training   seed {training.seed}, {_shown(metrics.get('steps'), int)} steps in "
        f"{_shown(metrics.get('seconds'), float)}s, {_shown(metrics.get('tokens_per_second'), float)} tokens/s, "
        f"stopped by {_shown(metrics.get('stop_reason'), str)}",
    ]
    if training.init_from is not None:
        new_tokens = _section(corpus, "new_tokens")
        lines.append(f"fine-tuned from {training.init_from['model']} (manifest sha256 "
                     f"{training.init_from['manifest_sha256'][:12]}...), {_shown(new_tokens.get('count'), int)} "
                     f"new tokens")
    if training.recipe is not None:
        lines.append(f"recipe     {training.recipe}")
    if best:
        lines.append(f"best       val loss {_shown(best.get('val_loss'), float, '.4f')} nats/token, "
                     f"{_shown(best.get('val_bits_per_char'), float, '.4f')} bits/char "
                     f"(epoch {_shown(best.get('epoch'), int)}, step {_shown(best.get('step'), int)})")
    libraries = _section(manifest, "libraries")
    lines.append("versions   " + ", ".join(f"{_shown(name, str)} {_shown(version, str)}"
                                           for name, version in sorted(libraries.items())))
    lines.append(f"format     {FORMAT} v{manifest['format_version']}, created {_shown(manifest.get('created'), str)}")
    return "\n".join(lines)


def _section(mapping: dict, key: str) -> dict:
    """``mapping[key]`` if it is a JSON object, else an empty one."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def _shown(value, kind: type, spec: str = "") -> str:
    """``value`` formatted with ``spec`` if it is of ``kind`` (an int counts as a float), else "?"."""
    kinds = (int, float) if kind is float else kind
    if isinstance(value, bool) or not isinstance(value, kinds):
        return "?"
    return format(value, spec)[:200]
