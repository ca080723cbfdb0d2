"""What a training run starts from, decided once: a fresh run, a resumed one, or a follower's.

``TrainRequest`` is everything a caller asks of one run; the command line and
``textgen.train`` both build one. ``plan_run`` turns it into a ``RunPlan``:

* fresh: the request's settings; the tokenizer is learned from the corpus, and
  nothing is restored. The destination is checked before any work.
* resumed: the settings, tokenizer, corpus and every variable of the newest
  checkpoint in ``out``; limits given now (``max_steps``, ``max_time``)
  replace the stored ones.
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
from textgen.config import TrainConfig
from textgen.errors import ConfigError, CorpusError, ModelDirError
from textgen.model.settings import ModelConfig
from textgen.tokenization.rules import TokenizerSettings
from textgen.tokenization.tokenizer import TextTokenizer
from textgen.training.tf_config import ClusterSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """Everything a caller asks of one training run; each part is checked when it is made.

    ``inputs`` are corpus files, folders, globs or names (none: the default
    corpus, or on resume the run's own). ``model`` leaves ``vocab_size`` to the
    tokenizer. On resume only ``training``'s limits are read, and only when given.
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

    def __post_init__(self):
        if not self.resume:
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

    kind: str  # "fresh", "resumed" or "follower"
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
        model_dir.check_writable(request.out)
        progress.message(f"resuming from step {plan.loop['steps']} in {checkpoints.root}")
        return plan
    model_dir.check_destination(request.out, overwrite=request.overwrite)
    model_dir.check_writable(request.out)
    return RunPlan("fresh", request.model, request.training, list(request.inputs), request.encoding,
                   request.errors, request.tokenizer)


def _stored_plan(kind: str, stored: dict, arrays: dict, tokenizer_json: str, request: TrainRequest) -> RunPlan:
    """A plan from a recorded one: a checkpoint's (resumed) or the chief's (follower)."""
    # Limits given now replace the stored ones; a follower takes the chief's as they are.
    limits = {} if kind == "follower" else {
        name: value for name, value in (("max_steps", request.training.max_steps),
                                        ("max_time", request.training.max_time)) if value}
    tokenizer = TextTokenizer.from_json(tokenizer_json)
    try:
        model = ModelConfig.from_dict(stored["model_config"])
        training = TrainConfig.from_dict({**stored["train_config"], **limits})
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
