"""Watching a run: samples on stderr, callbacks, TensorBoard events; none of it changes the weights trained."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import textgen
from textgen.cli.main import cli
from textgen.config import WatchConfig
from textgen.errors import ConfigError
from textgen.training import tensorboard
from textgen.training.loop import CURVE_EVERY, CURVE_POINTS, LoopState, Trainer
from textgen.training.watch import METRIC_KEYS

# About 7 steps an epoch on the tiny corpus, so a few validations in a few seconds; dropout on, so
# training draws random numbers that sampling must leave alone.
SMALL = dict(layers=1, units=16, embedding_dim=8, dropout=0.2, seq_length=20, batch_size=32, max_steps=28,
             patience=0, seed=5)
SMALL_OPTIONS = ["--layers", "1", "--units", "16", "--embedding-dim", "8", "--dropout", "0.2", "--seq-length", "20",
                 "--batch-size", "32", "--patience", "0", "--seed", "5"]


def weights(path):
    with np.load(path / "weights.npz") as archive:
        return {name: archive[name] for name in archive.files}


def assert_bitwise_equal(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


def events(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard reads from ``folder``: (step, value) by tag."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_sample_every_prints_samples_on_stderr_at_every_nth_validation(tiny_corpus, tmp_path):
    out = tmp_path / "model"
    result = CliRunner().invoke(cli, ["train", str(tiny_corpus), "--out", str(out), *SMALL_OPTIONS,
                                      "--max-steps", "28", "--sample-every", "2", "--sample-length", "40",
                                      "--json"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)  # stdout holds the metrics alone: no sample leaked there
    assert result.stdout.count("\n") == 1
    validated = [record["step"] for record in metrics["history"]]
    assert len(validated) >= 4
    headers = [line for line in result.stderr.splitlines() if line.startswith("sample at step")]
    assert headers == [f"sample at step {step}, temperature {t}:" for step in validated[1::2] for t in ("0.5", "1")]
    lines = result.stderr.splitlines()
    sample = lines[lines.index(headers[0]) + 1]
    assert sample.startswith("  ") and len(sample) > 2


def test_samples_are_shown_even_with_quiet(tiny_corpus, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(tiny_corpus), "--out", str(tmp_path / "m"), *SMALL_OPTIONS,
                                      "--max-steps", "7", "--sample-every", "1", "--sample-temperatures", "0",
                                      "--sample-length", "10", "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert [line for line in result.stderr.splitlines() if line and not line.startswith("  ")] == \
        ["sample at step 7, temperature 0:"]


def test_watched_run_trains_bitwise_the_same_weights(tiny_corpus, tmp_path):
    plain = textgen.train(str(tiny_corpus), out=tmp_path / "plain", quiet=True, **SMALL)
    seen = []
    watched = textgen.train(str(tiny_corpus), out=tmp_path / "watched", log=open(tmp_path / "log", "w"),
                            sample_every=1, sample_temperatures=[0.0, 0.7, 1.5], sample_length=30,
                            tensorboard=str(tmp_path / "tb"), callbacks=[seen.append], **SMALL)
    assert "sample at step" in (tmp_path / "log").read_text()
    assert len(seen) == len(plain.manifest["metrics"]["history"]) >= 4
    assert_bitwise_equal(weights(plain.path), weights(watched.path))
    assert plain.manifest["metrics"]["history"] == [{**record, "seconds": a["seconds"]} for record, a in
                                                    zip(watched.manifest["metrics"]["history"],
                                                        plain.manifest["metrics"]["history"])]


def test_callbacks_get_the_metrics_and_false_stops_the_run(tiny_corpus, tmp_path):
    seen, also = [], []

    def stop_at_second(metrics):
        seen.append(metrics)
        return len(seen) < 2

    model = textgen.train(str(tiny_corpus), out=tmp_path / "m", quiet=True, callbacks=[stop_at_second, also.append],
                          **{**SMALL, "max_steps": 100})
    assert len(seen) == 2 and len(also) == 2  # every callback is called, also after one asked to stop
    assert set(seen[0]) == set(METRIC_KEYS)
    history = model.manifest["metrics"]["history"]
    assert [m["step"] for m in seen] == [r["step"] for r in history]
    assert [m["val_loss"] for m in seen] == [r["val_loss"] for r in history]
    assert seen[1]["epoch"] == 2 and seen[1]["seconds"] > seen[0]["seconds"] > 0
    assert seen[0]["tokens_per_second"] > 0 and seen[0]["learning_rate"] == pytest.approx(4e-3)
    metrics = textgen.load(tmp_path / "m").manifest["metrics"]
    assert metrics["stop_reason"] == "callback" and metrics["steps"] == seen[1]["step"] < 100


def test_a_callback_that_raises_propagates_and_the_run_resumes_from_its_checkpoint(tiny_corpus, tmp_path):
    out = tmp_path / "m"

    def broken(metrics):
        raise RuntimeError("callback broke")

    with pytest.raises(RuntimeError, match="callback broke") as raised:
        textgen.train(str(tiny_corpus), out=out, quiet=True, callbacks=[broken], **SMALL)
    assert any("resuming the run continues" in note for note in raised.value.__notes__)
    assert not (out / "manifest.json").exists() and (out / "checkpoints" / "latest").exists()
    resumed = textgen.train(out=out, resume=True, quiet=True)
    plain = textgen.train(str(tiny_corpus), out=tmp_path / "plain", quiet=True, **SMALL)
    assert_bitwise_equal(weights(resumed.path), weights(plain.path))


def test_watch_settings_are_checked_before_any_work(tiny_corpus, tmp_path):
    for bad in (dict(sample_every=0), dict(sample_temperatures=[]), dict(sample_temperatures=[-1.0]),
                dict(sample_temperatures=[float("nan")]), dict(sample_length=0), dict(tensorboard="")):
        with pytest.raises(ConfigError, match="Received: "):
            WatchConfig(**bad)
    with pytest.raises(ConfigError, match="Received: callbacks="):
        textgen.train(str(tiny_corpus), out=tmp_path / "m", callbacks=print, **SMALL)
    with pytest.raises(ConfigError, match="Received: callback=3"):
        textgen.train(str(tiny_corpus), out=tmp_path / "m", callbacks=[3], **SMALL)
    assert not (tmp_path / "m").exists()
    result = CliRunner().invoke(cli, ["train", str(tiny_corpus), "--out", str(tmp_path / "m"), "--sample-every", "0"])
    assert result.exit_code == 2 and "Received: sample_every=0" in result.stderr
    for temperatures in ("0.5,-1", "warm"):
        result = CliRunner().invoke(cli, ["train", str(tiny_corpus), "--out", str(tmp_path / "m"),
                                          "--sample-every", "1", "--sample-temperatures", temperatures])
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert result.exit_code == 2 and len(errors) == 1 and "Received: " in errors[0]
    assert not (tmp_path / "m").exists()


def test_tensorboard_reads_the_runs_losses_learning_rate_and_throughput(tiny_corpus, tmp_path):
    model = textgen.train(str(tiny_corpus), out=tmp_path / "m", quiet=True, tensorboard=str(tmp_path / "tb"),
                          **{**SMALL, "max_steps": 60})
    metrics = model.manifest["metrics"]
    scalars = events(tmp_path / "tb")
    assert set(scalars) == {tensorboard.TRAIN_LOSS, tensorboard.VAL_LOSS, tensorboard.LEARNING_RATE,
                            tensorboard.TOKENS_PER_SECOND}
    validation = scalars[tensorboard.VAL_LOSS]
    assert [step for step, _ in validation] == [r["step"] for r in metrics["history"]]
    assert [value for _, value in validation] == pytest.approx([r["val_loss"] for r in metrics["history"]], rel=1e-6)
    train = scalars[tensorboard.TRAIN_LOSS]
    assert [step for step, _ in train] == [p["step"] for p in metrics["train_curve"]] == [25, 50]
    assert [value for _, value in train] == pytest.approx([p["loss"] for p in metrics["train_curve"]], rel=1e-6)
    assert [step for step, _ in scalars[tensorboard.TOKENS_PER_SECOND]] == [step for step, _ in validation]
    assert all(value > 0 for _, value in scalars[tensorboard.TOKENS_PER_SECOND])
    assert [value for _, value in scalars[tensorboard.LEARNING_RATE]] == pytest.approx([4e-3] * len(validation))


def test_a_tensorboard_folder_that_cannot_be_written_is_one_error_line(tiny_corpus, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = CliRunner().invoke(cli, ["train", str(tiny_corpus), "--out", str(tmp_path / "m"), *SMALL_OPTIONS,
                                      "--max-steps", "7", "--tensorboard", str(tmp_path / "file" / "tb")])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert errors == [f"Error: cannot write TensorBoard events there: Not a directory. "
                      f"Received: tensorboard='{tmp_path / 'file' / 'tb'}'"]


def test_a_restarted_writer_replaces_the_steps_it_repeats(tmp_path):
    first = tensorboard.EventWriter(tmp_path, first_step=1)
    for step in range(1, 11):
        first.scalars(step, {"x": float(step)})
    first.close()  # a crash at step 10, with the last checkpoint at step 5
    second = tensorboard.EventWriter(tmp_path, first_step=6)
    for step in range(6, 9):
        second.scalars(step, {"x": -float(step)})
    second.close()
    assert events(tmp_path)["x"] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, -6), (7, -7), (8, -8)]


def test_kill_9_of_a_watched_run_resumes_bitwise_with_events_once_per_step(tiny_corpus, tmp_path):
    common = [sys.executable, "-m", "textgen", "train", str(tiny_corpus), *SMALL_OPTIONS, "--max-steps", "100",
              "--checkpoint-every", "4"]
    plain = tmp_path / "plain"
    subprocess.run([*common, "--out", str(plain)], check=True, capture_output=True, timeout=600)

    watched, board = tmp_path / "watched", tmp_path / "tb"
    command = [*common, "--out", str(watched), "--sample-every", "1", "--sample-length", "20",
               "--tensorboard", str(board)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = watched / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    # Killed once the run is past its first curve point (step 25), between two checkpoints.
    while process.poll() is None and time.monotonic() < deadline:
        if latest.exists() and int(latest.read_text().split("-")[-1] or 0) >= 30:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (watched / "manifest.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "textgen", "train", "--out", str(watched), "--resume",
                              "--tensorboard", str(board)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "sample at step" not in resumed.stderr  # the resumed session dropped --sample-every

    assert_bitwise_equal(weights(plain), weights(watched))
    metrics = json.loads((watched / "manifest.json").read_text())["metrics"]
    plain_metrics = json.loads((plain / "manifest.json").read_text())["metrics"]
    assert [p["loss"] for p in metrics["train_curve"]] == [p["loss"] for p in plain_metrics["train_curve"]]
    scalars = events(board)
    assert [step for step, _ in scalars[tensorboard.TRAIN_LOSS]] == [25, 50, 75, 100]
    assert [value for _, value in scalars[tensorboard.TRAIN_LOSS]] == \
        pytest.approx([p["loss"] for p in metrics["train_curve"]], rel=1e-6)
    assert [step for step, _ in scalars[tensorboard.VAL_LOSS]] == [r["step"] for r in metrics["history"]]


def test_a_long_training_curve_is_thinned_and_keeps_its_mean_losses():
    trainer = Trainer.__new__(Trainer)  # only the curve's bookkeeping is exercised
    trainer.state, trainer.watch = LoopState(), None
    trainer._seconds_before, trainer._session_start = 0.0, time.monotonic()
    losses = np.arange(1, 2 * CURVE_POINTS * CURVE_EVERY + 1, dtype=float)
    for loss in losses:
        trainer.state.steps += 1
        trainer.state.curve_losses.append(float(loss))
        if len(trainer.state.curve_losses) >= trainer.state.curve_every:
            trainer._add_curve_point()
    curve = trainer.state.curve
    assert len(curve) == CURVE_POINTS and trainer.state.curve_every == 2 * CURVE_EVERY
    every = 2 * CURVE_EVERY
    assert [p["step"] for p in curve] == list(range(every, len(losses) + 1, every))
    means = [losses[i:i + every].mean() for i in range(0, len(losses), every)]
    assert [p["loss"] for p in curve] == pytest.approx(means)


# Each worker of a multiworker run calls this script alike; only the chief may watch.
WATCHED_WORKER = """
import json, sys, textgen
out, board, corpus, settings = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
calls = []
def stop_at_second(metrics):
    calls.append(metrics["step"])
    return len(calls) < 2
textgen.train(corpus, out=out, strategy="multiworker", peer_timeout=120, sample_every=1, sample_length=10,
              tensorboard=board, callbacks=[stop_at_second], **settings)
print(json.dumps({"calls": calls}), file=sys.stderr)  # the test keeps stderr alone
"""


def test_in_a_multiworker_run_only_the_chief_watches_and_every_worker_stops_with_it(tiny_corpus, tmp_path):
    from test_distributed import run_all, tf_configs

    settings = json.dumps({**SMALL, "max_steps": 100})
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    commands = [[sys.executable, "-c", WATCHED_WORKER, str(tmp_path / f"out{i}"), str(tmp_path / f"tb{i}"),
                 str(tiny_corpus), settings] for i in range(2)]
    codes = run_all(commands, [{"TF_CONFIG": config} for config in tf_configs(2)], [open(log, "wb") for log in logs])
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], texts  # a worker that went on alone would wait for its peer until the bound
    calls = [json.loads(text.strip().splitlines()[-1])["calls"] for text in texts]
    assert len(calls[0]) == 2 and calls[1] == []
    assert "sample at step" in texts[0] and "sample at step" not in texts[1]
    assert (tmp_path / "tb0").is_dir() and not (tmp_path / "tb1").exists()
    metrics = textgen.load(tmp_path / "out0").manifest["metrics"]
    assert metrics["stop_reason"] == "callback" and metrics["steps"] == calls[0][1]
