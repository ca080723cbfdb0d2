"""What a training run starts from, decided once: a fresh run, a resumed one, or a follower's.

``TrainRequest`` is everything a caller asks of one run; the command line and
``textgen.train`` both build one. ``plan_run`` turns it into a ``RunPlan``:

* fresh: the request's settings; the tokenizer is learned from the corpus, and
  nothing is restored. The destination is checked before any work.
* fine-tuning (a fresh run with ``init_from``): the base model's architecture,
  tokenizer and weights (``BaseModel``), with the request's training settings;
  the run adds what the new corpus needs to the vocabulary.
* resumed: the settings, tokenizer, corpus and every variable of the newest
  checkpoint in ``out``; limits given now (``textgen.config.Limits``: new
  totals, or increments from where the run stands) replace the stored ones.
* finished: a resumed run that a limit already stops, whose model ``out``
  already holds: there is nothing to do, which one line says, and nothing is
  read or written.
* follower (a worker of a distributed run that is not the chief): the chief's
  plan, received from it; the follower writes only to a scratch folder, which
  is thrown away.

A plan is recorded as plain JSON in the same shape wherever it goes: in every
checkpoint, and in what the chief sends its followers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from textgen import model_dir
from textgen.config import Limits, TrainConfig, fail
from textgen.errors import ConfigError, CorpusError, ModelDirError
from textgen.files import file_sha256
from textgen.model.settings import ModelConfig
from textgen.text_model import ModelFiles, read_model_files
from textgen.tokenization.rules import TokenizerSettings
from textgen.tokenization.tokenizer import TextTokenizer
from textgen.training.loop import LoopState
from textgen.training.tf_config import ClusterSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """Everything a caller asks of one training run; each part is checked when it is made.

    ``inputs`` are corpus files, folders, globs or names (none: the default
    corpus, or on resume the run's own). ``model`` leaves ``vocab_size`` to the
    tokenizer. ``limits`` are the limits given now: they replace
    ``training``'s own on a fresh run, and the stored ones on resume, where
    ``model``, ``training`` and ``tokenizer`` are not read (the run's own are).
    """

    out: Path
    inputs: tuple[str, ...] = ()
    model: ModelConfig = ModelConfig()
    training: TrainConfig = TrainConfig()
    tokenizer: TokenizerSettings = TokenizerSettings()
    encoding: str = "utf-8"
    errors: str = "strict"
    overwrite: bool = False
    resume: bool = False
    cluster: ClusterSettings = ClusterSettings()
    limits: Limits = Limits()
    init_from: str | None = None  # a model directory or a shipped model's name: fine-tune it
    # A preset that chooses the model (``textgen.training.budget``), and the settings the caller left to it.
    preset: str | None = None
    left_open: frozenset[str] = frozenset()

    def __post_init__(self):
        if self.init_from is not None:
            if not isinstance(self.init_from, (str, Path)):
                fail("init_from must be a model directory or a shipped model's name", "init_from", self.init_from)
            if self.resume:
                fail("init_from starts a new run from a trained model; resume continues a run, which knows its "
                     "own start", "init_from", str(self.init_from))
            if self.cluster.strategy == "multiworker":
                fail("fine-tuning trains on one host (default or mirrored strategy)", "strategy",
                     self.cluster.strategy)
        if self.resume:
            return
        for name, value in self.limits.increments.items():
            fail(f"{name} continues a run, so it needs resume; a new run takes a total (max_steps, max_time)",
                 name, value)
        # Every setting is checked before any text is read: the model's size depends on the vocabulary the
        # tokenizer will learn, so it is checked with the largest one it can learn.
        self.model.with_vocab(self.tokenizer.largest_vocab)


@dataclasses.dataclass
class RunPlan:
    """A run's settings, corpus and starting point, whatever kind of run it is.

    ``tokenizer`` is None when it is still to be learned (a fresh run);
    ``corpus_sha256`` is the corpus the run was trained on, which the corpus
    read now must match (None for a fresh run); ``loop`` and ``arrays`` are
    where training resumes (None: from the start).
    """

    kind: str  # "fresh", "resumed", "finished" or "follower"
    model: ModelConfig
    training: TrainConfig
    inputs: list[str]
    encoding: str
    errors: str
    tokenizer_settings: TokenizerSettings
    tokenizer: TextTokenizer | None = None
    corpus_sha256: str | None = None
    loop: dict | None = None
    arrays: dict[str, np.ndarray] | None = None
    base: "BaseModel | None" = None  # a fine-tuning run's starting model

    def check_corpus(self, sha256: str) -> None:
        """Refuse a corpus other than the one a resumed or followed run was trained on."""
        if self.corpus_sha256 is not None and sha256 != self.corpus_sha256:
            raise CorpusError(f"the corpus differs from the one this run was trained on (sha256 {sha256[:12]}... "
                              f"instead of {self.corpus_sha256[:12]}...). Received: corpus={self.inputs}")

    def record(self, model: ModelConfig, corpus: dict) -> dict:
        """The plan as JSON, with the model's vocabulary and the corpus as read (``corpus`` holds its sha256)."""
        return {"model_config": model.to_dict(), "train_config": self.training.to_dict(),
                "corpus": {**corpus, "inputs": resolved(self.inputs), "encoding": self.encoding,
                           "errors": self.errors, "tokenizer_sample_bytes": self.tokenizer_settings.sample_bytes}}


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """The trained model a fine-tuning run starts from, read and checked, and how the run records it."""

    files: ModelFiles
    record: dict  # TrainConfig.init_from: the model's name or path, and its manifest's sha256

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.files.tokenizer


# How many tokens a fine-tuning run may add to its base's vocabulary when no vocab_size bounds it.
NEW_TOKENS_LIMIT = 1024

# The architecture comes from the base model: these settings shape its weights.
_ARCHITECTURE = ("cell", "layers", "units", "embedding_dim")


def _fine_tuning(request: TrainRequest) -> RunPlan:
    """A fresh run that starts from the trained model ``request.init_from``, with its architecture and tokenizer.

    Settings that would change the base's weights' shapes or its tokenizer's
    level are refused when given with a value other than the base's (a value
    left at its default is taken from the base); dropout may change.
    """
    files = read_model_files(model_dir.locate(str(request.init_from)))
    if request.out.resolve() == files.path.resolve():
        fail("fine-tuning writes a new model; --out must not be the model it starts from", "out", str(request.out))
    base_model, defaults = files.settings.model, ModelConfig()
    for name in _ARCHITECTURE:
        given, own = getattr(request.model, name), getattr(base_model, name)
        if given != getattr(defaults, name) and given != own:
            fail(f"{name} comes from the model being fine-tuned ({own}); leave it out", name, given)
    level = files.settings.tokenizer_level
    if request.tokenizer.level != TokenizerSettings.level and request.tokenizer.level != level:
        fail(f"the tokenizer comes from the model being fine-tuned ({level}); leave it out", "tokenizer",
             request.tokenizer.level)
    dropout = request.model.dropout if request.model.dropout != defaults.dropout else base_model.dropout
    shipped = model_dir.is_shipped(files.path)
    record = {"model": files.path.name if shipped else str(files.path.resolve()),
              "manifest_sha256": file_sha256(files.path / model_dir.MANIFEST_FILE)}
    training = dataclasses.replace(request.limits.applied_to(request.training), init_from=record)
    model = dataclasses.replace(base_model, dropout=dropout, vocab_size=None)
    return RunPlan("fresh", model, training, list(request.inputs), request.encoding, request.errors,
                   dataclasses.replace(request.tokenizer, level=level), base=BaseModel(files, record))


def plan_run(request: TrainRequest, *, cluster, checkpoints, progress) -> RunPlan:
    """The plan of the run ``request`` asks for, in this process's role in ``cluster`` (None: alone)."""
    if cluster is not None and not cluster.is_chief:  # waits while the chief reads its corpus and tokenizer
        stored, arrays = cluster.share_plan()
        plan = _stored_plan("follower", stored, arrays, stored.pop("tokenizer"), request)
        progress.message(f"following the chief's run from step {(plan.loop or {}).get('steps', 0)}")
        return plan
    if request.resume:
        arrays, stored, tokenizer_json = checkpoints.load_latest()
        plan = _stored_plan("resumed", stored, arrays, tokenizer_json, request)
        # The limits given now replace the stored ones (a follower takes the chief's as they are).
        position = LoopState.from_dict(plan.loop)
        plan.training = request.limits.applied_to(plan.training, steps=position.steps, seconds=position.seconds)
        reason = position.stop_reason(plan.training, position.seconds)
        # In a cluster every worker must go through the run (it returns at once), or the followers would wait.
        saved = _final_metrics(request.out, plan.loop) if reason is not None and cluster is None else None
        if saved is not None:
            progress.message(_nothing_left(reason, plan.training, saved, request.out))
            plan.kind = "finished"
            return plan
        model_dir.check_writable(request.out)
        progress.message(f"resuming from step {plan.loop['steps']} in {checkpoints.root}")
        return plan
    model_dir.check_destination(request.out, overwrite=request.overwrite)
    model_dir.check_writable(request.out)
    if request.init_from is not None:
        plan = _fine_tuning(request)
        progress.message(f"fine-tuning {plan.base.record['model']} (manifest sha256 "
                         f"{plan.base.record['manifest_sha256'][:12]}...)")
        return plan
    return RunPlan("fresh", request.model, request.limits.applied_to(request.training), list(request.inputs),
                   request.encoding, request.errors, request.tokenizer)


def _final_metrics(out: Path, loop: dict) -> dict | None:
    """The metrics of the model in ``out`` if its run saved it when it stopped at the step ``loop`` stands at."""
    try:
        _, manifest = model_dir.read_manifest(out)
    except ModelDirError:  # killed before the model was written, or a broken one: the run writes it again
        return None
    metrics = manifest.get("metrics")
    final = isinstance(metrics, dict) and metrics.get("steps") == loop["steps"] and \
        metrics.get("stop_reason") != "interrupted" and isinstance(metrics.get("seconds"), (int, float))
    return metrics if final else None


# What each limit counts, and how a run it stopped can go on: for the line that says a resumed run has nothing to do.
_REACHED = {
    "max_steps": ("a total for the whole run", "--more-steps N trains N steps more"),
    "max_time": ("a total for the whole run", "--more-time 10m trains 10 minutes more"),
    "epochs": ("a total for the whole run", "a larger --epochs trains more epochs"),
    "patience": ("epochs in a row without a better validation loss", "the run ends here"),
}


def _nothing_left(reason: str, training: TrainConfig, metrics: dict, out: Path) -> str:
    """One line: the limit a resumed run has already reached, as its saved ``metrics`` say, and how it can go on."""
    value = getattr(training, reason)  # every stop reason but "interrupted" is the name of its limit
    limit = f"--{reason.replace('_', '-')} {value:g}" + ("s" if reason == "max_time" else "")
    counts, going_on = _REACHED[reason]
    return (f"nothing to do: the run in {out} has reached {limit} ({counts}) after {metrics['steps']} steps in "
            f"{metrics['seconds']:.0f}s; {going_on}")


def _stored_plan(kind: str, stored: dict, arrays: dict, tokenizer_json: str, request: TrainRequest) -> RunPlan:
    """A plan from a recorded one: a checkpoint's (resumed) or the chief's (follower)."""
    tokenizer = TextTokenizer.from_json(tokenizer_json)
    try:
        model = ModelConfig.from_dict(stored["model_config"])
        training = TrainConfig.from_dict(stored["train_config"])
        corpus = stored["corpus"]
        tokenizer_settings = TokenizerSettings(
            tokenizer.level, sample_bytes=corpus.get("tokenizer_sample_bytes", request.tokenizer.sample_bytes))
        return RunPlan(kind, model, training, list(request.inputs) or list(corpus["inputs"]), corpus["encoding"],
                       corpus["errors"], tokenizer_settings, tokenizer, corpus["sha256"], stored.get("loop"), arrays)
    except (KeyError, TypeError, ConfigError) as exc:
        raise ModelDirError(f"the checkpoint's settings are unusable: {exc}. Received: out='{request.out}'") from None


def resolved(inputs: list[str]) -> list[str]:
    """Corpus inputs with paths made absolute, so --resume works from any working directory."""
    return [str(Path(item).resolve()) if Path(item).exists() else item for item in inputs]
