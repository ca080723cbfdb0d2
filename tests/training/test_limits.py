"""Limits on resume: totals for the whole run, increments from where it stands, and a finished run left alone."""

import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import textgen
from textgen.cli.main import cli
from textgen.config import Limits, TrainConfig
from textgen.errors import ConfigError
from textgen.training.checkpoints import CheckpointManager
from textgen.training.plan import TrainRequest

from conftest import TINY_SETTINGS


def tree(path):
    """Every file under ``path`` with its bytes and modification time: what "nothing written" must keep."""
    return {p.relative_to(path): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_finished_run_resumed_says_so_in_one_line_and_writes_nothing(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    # Stopped in the middle of its first epoch: resumed, the old loop validated one empty epoch after another.
    textgen.train(str(tiny_corpus), out=out, quiet=True, **{**TINY_SETTINGS, "max_steps": 5})
    before = tree(out)
    result = CliRunner().invoke(cli, ["train", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"nothing to do: the run in {re.escape(str(out))} has reached --max-steps 5 \(a total for the whole run\) "
        rf"after 5 steps in \d+s; --more-steps N trains N steps more", lines[0]), lines
    assert result.stdout == ""
    assert tree(out) == before


def test_max_time_on_resume_is_a_total_and_more_time_an_increment(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    textgen.train(str(tiny_corpus), out=out, quiet=True, **{**TINY_SETTINGS, "max_steps": 5})
    seconds = CheckpointManager(out).load_latest()[1]["loop"]["seconds"]  # where a resumed run's clock starts
    before = tree(out)
    # A total the run has already spent: nothing to do (the old loop trained one more step).
    again = textgen.train(out=out, quiet=True, resume=True, max_time=seconds / 2)
    assert again.manifest["metrics"]["steps"] == 5 and tree(out) == before
    # An increment counts from the stored seconds; the step limit is lifted with a new total.
    more = textgen.train(out=out, quiet=True, resume=True, more_time="1s", max_steps=10**9)
    assert more.train_config.max_time == seconds + 1
    assert more.manifest["metrics"]["stop_reason"] == "max_time"
    assert more.manifest["metrics"]["steps"] > 5 and more.manifest["metrics"]["seconds"] >= round(seconds + 1, 2)


def test_more_steps_and_a_new_epochs_continue_a_run_without_empty_epochs(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    settings = {**TINY_SETTINGS, "max_steps": None, "patience": 0}
    one = textgen.train(str(tiny_corpus), out=out, quiet=True, epochs=1, **settings)
    per_epoch = one.manifest["metrics"]["steps"]
    assert one.manifest["metrics"]["stop_reason"] == "epochs"
    more = textgen.train(out=out, quiet=True, resume=True, more_steps=3)
    assert more.manifest["metrics"]["steps"] == per_epoch  # the stored --epochs 1 still holds
    two = textgen.train(out=out, quiet=True, resume=True, epochs=2)
    metrics = two.manifest["metrics"]
    assert metrics["stop_reason"] == "epochs" and two.train_config.epochs == 2
    assert [(record["epoch"], record["epoch_fraction"]) for record in metrics["history"]] == [(1, 1.0), (2, 1.0)]
    three = textgen.train(out=out, quiet=True, resume=True, more_steps=3, epochs=3)
    assert three.manifest["metrics"]["steps"] == metrics["steps"] + 3
    assert three.manifest["metrics"]["stop_reason"] == "max_steps"
    assert three.train_config.max_steps == metrics["steps"] + 3


def test_a_run_stopped_on_the_last_step_of_an_epoch_goes_on_with_the_next(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    settings = {**TINY_SETTINGS, "max_steps": None, "patience": 0}
    per_epoch = textgen.train(str(tiny_corpus), out=tmp_path / "probe", quiet=True, epochs=1,
                              **settings).manifest["metrics"]["steps"]
    textgen.train(str(tiny_corpus), out=out, quiet=True, **{**settings, "max_steps": per_epoch})
    more = textgen.train(out=out, quiet=True, resume=True, more_steps=2)
    history = more.manifest["metrics"]["history"]
    # One validation at the end of epoch 1, one after two steps of epoch 2: none for an epoch with no steps.
    assert [(record["epoch"], record["step"]) for record in history] == [(1, per_epoch), (2, per_epoch + 2)]


@pytest.mark.parametrize("limits, message", [
    (dict(more_steps=5), "more_steps continues a run, so it needs resume"),
    (dict(more_time=60.0), "more_time continues a run, so it needs resume"),
])
def test_an_increment_without_resume_is_refused(tmp_path, limits, message):
    with pytest.raises(ConfigError, match=message):
        TrainRequest(out=tmp_path / "m", limits=Limits(**limits))


@pytest.mark.parametrize("limits", [dict(max_steps=5, more_steps=5), dict(max_time=5.0, more_time=5.0)])
def test_a_total_and_an_increment_of_one_kind_are_not_given_together(limits):
    with pytest.raises(ConfigError, match=r"a total for the whole run\) or more_\w+ \(an increment\), not both"):
        Limits(**limits)


def test_increments_become_totals_where_the_run_stands():
    applied = Limits(more_steps=10, more_time=60.0, epochs=4).applied_to(TrainConfig(max_steps=50, max_time=100.0),
                                                                        steps=50, seconds=90.5)
    assert (applied.max_steps, applied.max_time, applied.epochs) == (60, 150.5, 4)
    assert Limits().applied_to(TrainConfig(max_steps=50)) == TrainConfig(max_steps=50)


# The kill test's run: dropout on, checkpoints every 2 steps, never stopped by patience.
RUN = ["--layers", "2", "--units", "16", "--embedding-dim", "8", "--dropout", "0.2", "--seq-length", "20",
       "--batch-size", "8", "--patience", "0", "--seed", "5", "--checkpoint-every", "2"]


def textgen_train(out, *extra, **popen):
    return subprocess.Popen([sys.executable, "-m", "textgen", "train", "--out", str(out), *RUN, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def finish(process):
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr.decode()[-2000:]


def test_a_run_continued_by_more_steps_and_killed_ends_equal_to_one_never_killed(tiny_corpus, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish(textgen_train(straight, str(tiny_corpus), "--max-steps", "10"))
    shutil.copytree(straight, killed)

    finish(textgen_train(straight, "--resume", "--more-steps", "120"))

    process = textgen_train(killed, "--resume", "--more-steps", "120")
    latest = killed / "checkpoints" / "latest"
    first = latest.read_text()
    deadline = time.monotonic() + 300
    while process.poll() is None and latest.read_text() == first and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the continued run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert textgen.load(killed).manifest["metrics"]["steps"] == 10  # the kill came before the end
    # Resumed again without --more-steps: the total recorded when it was continued holds.
    finish(textgen_train(killed, "--resume"))

    with np.load(straight / "weights.npz") as a, np.load(killed / "weights.npz") as b:
        assert a.files == b.files
        for name in a.files:
            assert np.array_equal(a[name], b[name]), name
    assert textgen.load(killed).manifest["metrics"]["steps"] == 130
