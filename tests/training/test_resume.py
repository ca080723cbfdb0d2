"""Exact resume: kill -9 at random moments, resume, and end bitwise equal to an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import textgen
from textgen.training.checkpoints import CheckpointManager, CheckpointWarning
from textgen.errors import ModelDirError, TrainingError

from conftest import TINY_SETTINGS

# Dropout and shuffling on, several epochs, checkpoints every 4 steps; long enough that
# two kills always land before the end.
RUN = ["--layers", "2", "--units", "16", "--embedding-dim", "8", "--dropout", "0.2", "--seq-length", "20",
       "--batch-size", "8", "--max-steps", "100", "--patience", "0", "--seed", "11", "--checkpoint-every", "4"]


def train_command(corpus, out, *extra):
    return [sys.executable, "-m", "textgen", "train", str(corpus), "--out", str(out), *RUN, *extra]


def weights(path):
    with np.load(path / "weights.npz") as archive:
        return {name: archive[name] for name in archive.files}


def test_kill_9_at_random_moments_then_resume_is_bitwise_exact(tiny_corpus, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(train_command(tiny_corpus, straight), check=True, capture_output=True, timeout=600)

    resumed = tmp_path / "resumed"
    rng = random.Random(2024)
    kills = 0
    command = train_command(tiny_corpus, resumed)
    for attempt in range(3):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        latest = resumed / "checkpoints" / "latest"
        seen = latest.read_text() if latest.exists() else None
        deadline = time.monotonic() + 300
        # Wait for a new checkpoint, then kill at a random moment after it.
        while process.poll() is None and time.monotonic() < deadline:
            if latest.exists() and latest.read_text() != seen:
                time.sleep(rng.uniform(0.0, 0.3))
                break
            time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        else:
            assert process.returncode == 0, process.stderr.read().decode()[-2000:]
            if (resumed / "manifest.json").exists():
                break
        command = train_command(tiny_corpus, resumed, "--resume")
    assert kills >= 2, "the run should have been killed at least twice"
    if not (resumed / "manifest.json").exists():
        subprocess.run(command, check=True, capture_output=True, timeout=600)

    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert textgen.load(resumed).manifest["metrics"]["steps"] == 100


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    textgen.train(str(tiny_corpus), out=out, quiet=True, checkpoint_every=5,
                  **{**TINY_SETTINGS, "max_steps": 12, "patience": 0})
    manager = CheckpointManager(out, keep=3)
    # A finished run keeps one bundle; make a second, newer one and break it.
    arrays, progress, tokenizer_json = manager.load_latest()
    manager.save(99, arrays, {**progress, "loop": {**progress["loop"], "steps": 99}}, tokenizer_json)
    (out / "checkpoints" / "ckpt-0000000099" / "state.npz").write_bytes(b"broken")
    with pytest.warns(CheckpointWarning, match="ckpt-0000000099"):
        _, fallback, _ = manager.load_latest()
    assert fallback["loop"]["steps"] == 12


def test_leftover_temporary_bundles_are_removed_at_start(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    leftover = out / "checkpoints" / ".tmp-crashed"
    leftover.mkdir(parents=True)
    (leftover / "state.npz").write_bytes(b"half")
    textgen.train(str(tiny_corpus), out=out, quiet=True, overwrite=True, **{**TINY_SETTINGS, "max_steps": 2})
    assert not leftover.exists()


def test_resume_refuses_a_changed_corpus(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    textgen.train(str(tiny_corpus), out=out, quiet=True, **{**TINY_SETTINGS, "max_steps": 3})
    other = tmp_path / "other.txt"
    other.write_text(tiny_corpus.read_text() + "more text\n")
    with pytest.raises(Exception, match="corpus differs"):
        textgen.train(str(other), out=out, quiet=True, resume=True, more_steps=3)


def test_resume_without_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(ModelDirError, match="no checkpoint"):
        textgen.train(out=tmp_path / "nothing", quiet=True, resume=True)


def test_an_unfinished_run_is_not_silently_restarted(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    (out / "checkpoints").mkdir(parents=True)
    with pytest.raises(ModelDirError, match="--resume"):
        textgen.train(str(tiny_corpus), out=out, quiet=True, **TINY_SETTINGS)


def test_nan_loss_stops_keeps_the_last_good_checkpoint_and_writes_no_model(tiny_corpus, tmp_path, monkeypatch):
    from textgen.backend import tf
    from textgen.training.loop import Trainer

    original_step = Trainer._step

    def diverging_step(self, x, y):
        # From the 7th step on, the weights blow up, as with far too high a learning rate.
        embeddings = self.model.get_layer("embedding").embeddings
        tf.cond(self.optimizer.iterations >= 6,
                lambda: embeddings.assign(embeddings * float("inf")), lambda: embeddings)
        return original_step(self, x, y)

    monkeypatch.setattr(Trainer, "_step", diverging_step)
    out = tmp_path / "m"
    with pytest.raises(TrainingError, match="became nan at step 7.*--learning-rate"):
        textgen.train(str(tiny_corpus), out=out, quiet=True, checkpoint_every=1,
                      **{**TINY_SETTINGS, "max_steps": 20})
    assert not (out / "manifest.json").exists()
    arrays, progress, _ = CheckpointManager(out).load_latest()
    assert progress["loop"]["steps"] == 6
    assert all(np.all(np.isfinite(a)) for a in arrays.values() if a.dtype.kind == "f")


def test_a_full_disk_gives_one_line_and_keeps_the_previous_checkpoint(tiny_corpus, tmp_path, monkeypatch):
    import errno

    from textgen.training import checkpoints

    out = tmp_path / "m"
    textgen.train(str(tiny_corpus), out=out, quiet=True, **{**TINY_SETTINGS, "max_steps": 4})
    manager = CheckpointManager(out)
    arrays, progress, tokenizer_json = manager.load_latest()
    before = sorted(os.listdir(out / "checkpoints"))

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "write_synced", full_disk)
    with pytest.raises(TrainingError, match="no space left on the device"):
        manager.save(50, arrays, progress, tokenizer_json)
    assert sorted(os.listdir(out / "checkpoints")) == before
    monkeypatch.undo()
    assert manager.load_latest()[1]["loop"]["steps"] == 4


def interruptible():
    """Run in the child before exec: a shell that started these tests in the background made SIGINT
    ignored, and Python keeps an ignored SIGINT ignored instead of raising KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_training_saves_and_exits_130(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    command = train_command(tiny_corpus, out)
    command[command.index("100")] = "100000"  # far more steps than the test waits for
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=interruptible)
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr.decode()[-2000:]
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    model = textgen.load(out)
    assert model.manifest["metrics"]["stop_reason"] == "interrupted"
    # The interrupted run can be carried on later.
    assert CheckpointManager(out).load_latest()[1]["loop"]["steps"] == model.manifest["metrics"]["steps"]


def test_ctrl_c_during_sampling_prints_what_was_generated_and_exits_130(tiny_model_dir):
    process = subprocess.Popen([sys.executable, "-m", "textgen", "sample", str(tiny_model_dir), "--prompt", "ROMEO:",
                                "--length", "1000000", "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=interruptible)
    first = process.stdout.read(40)  # generation has begun
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()[-2000:]
    text = (first + rest).decode("utf-8")
    assert text.startswith("ROMEO:") and len(text) > 40
    assert b"Traceback" not in stderr


def test_an_unwritable_output_directory_fails_before_training(tiny_corpus, tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(ModelDirError, match="cannot write to the output directory: Read-only file system"):
        textgen.train(str(tiny_corpus), out=tmp_path / "m", quiet=True, **TINY_SETTINGS)
    assert not (tmp_path / "m").exists()
