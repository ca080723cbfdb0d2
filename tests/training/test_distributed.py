"""Training across processes and devices: two workers on loopback, mirrored logical CPUs, a killed worker.

Every run is a real process, bounded in time: a worker waiting for a peer
that is gone would otherwise block forever. Each is started in its own
process group, and the whole group is killed when its time is up.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import textgen
from textgen.training.tf_config import read_tf_config
from textgen.errors import ConfigError

# A tiny model with dropout off (so runs can be compared exactly) and a clipnorm so
# small that clipping acts at every step: per-replica clipping would show.
SETTINGS = dict(layers=1, units=8, embedding_dim=8, dropout=0.0, seq_length=10, batch_size=8, patience=0,
                seed=3, clipnorm=0.05, checkpoint_every=5)
STEPS = 12
BOUND = 240  # seconds any one process may take here; a hang fails the test instead of blocking it
TOLERANCE = 1e-5


def cli_args(settings=SETTINGS):
    args = []
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def tf_configs(count):
    """One TF_CONFIG per worker: the same cluster of loopback addresses, each its own task."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(count)]


def start(command, env=None, log=None):
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=log or subprocess.PIPE, start_new_session=True)


def finish(process, deadline):
    """Wait for ``process`` until ``deadline``; past it, kill its whole process group and fail."""
    try:
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"a process ran past its {BOUND}s bound: {process.args}")
    return process.returncode


def run_all(commands, envs, logs):
    """Start every command at once (workers need each other) and wait for all, bounded."""
    processes = [start(command, env, log) for command, env, log in zip(commands, envs, logs)]
    deadline = time.monotonic() + BOUND
    try:
        return [finish(process, deadline) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


def weights_of(path):
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a)


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory):
    """Weights of single-process, one-device runs, by step count: what every distributed run must match."""
    cache = {}

    def weights(steps):
        if steps not in cache:
            out = tmp_path_factory.mktemp("reference") / "m"
            textgen.train(str(tiny_corpus), out=out, quiet=True, max_steps=steps, **SETTINGS)
            cache[steps] = weights_of(out / "weights.npz")
        return cache[steps]

    return weights


# The worker script for test 1: textgen.train through the Python API, then a dump of
# the weights it returns (the worker that is not the chief keeps no model directory).
WORKER = """
import sys, json, numpy as np, textgen
from textgen.model.network import named_weights
out, dump, corpus, settings = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
model = textgen.train(corpus, out=out, strategy="multiworker", peer_timeout=120, **settings)
np.savez(dump, **{name: v.numpy() for name, v in named_weights(model.keras_model, model.config).items()})
print(json.dumps({"path": None if model.path is None else str(model.path)}))
"""


def test_two_workers_on_loopback_match_one_process(tiny_corpus, tmp_path, reference):
    settings = json.dumps({**SETTINGS, "max_steps": STEPS})
    outs = [tmp_path / "chief", tmp_path / "worker1"]
    dumps = [tmp_path / f"weights{i}.npz" for i in range(2)]
    scratch = tmp_path / "worker1-tmp"  # the follower's TMPDIR: its temporary writes must be gone at the end
    scratch.mkdir()
    logs = [open(tmp_path / f"worker{i}.log", "wb") for i in range(2)]
    envs = [{"TF_CONFIG": config} for config in tf_configs(2)]
    envs[1]["TMPDIR"] = str(scratch)
    commands = [[sys.executable, "-c", WORKER, str(out), str(dump), str(tiny_corpus), settings]
                for out, dump in zip(outs, dumps)]
    codes = run_all(commands, envs, logs)
    texts = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], texts

    chief, follower = weights_of(dumps[0]), weights_of(dumps[1])
    assert max_difference(chief, follower) == 0.0  # the same update, applied on each worker
    assert max_difference(chief, weights_of(outs[0] / "weights.npz")) == 0.0
    difference = max_difference(chief, reference(STEPS))
    print(f"two workers against one process, {STEPS} steps: max |difference| {difference:.3g}")  # shown by -s
    assert difference < TOLERANCE
    assert textgen.load(outs[0]).manifest["metrics"]["steps"] == STEPS
    # Only the chief writes: the other worker's --out is untouched and its scratch removed.
    assert not outs[1].exists()
    assert list(scratch.iterdir()) == []
    assert "[worker 1] " in texts[1] and "saved nothing (the chief saves the model)" in texts[1]


MIRRORED = """
import sys, json, numpy as np, textgen
from textgen.errors import ConfigError
out, corpus, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
try:
    textgen.train(corpus, out=out + "-odd", strategy="mirrored", devices=2, **{**settings, "batch_size": 7})
except ConfigError as exc:
    print(json.dumps({"odd_batch": str(exc)}))
textgen.train(corpus, out=out, strategy="mirrored", devices=2, quiet=True, **settings)
"""


def test_mirrored_over_two_logical_cpus_matches_one_device(tiny_corpus, tmp_path, reference):
    out = tmp_path / "mirrored"
    settings = json.dumps({**SETTINGS, "max_steps": STEPS})
    run = subprocess.run([sys.executable, "-c", MIRRORED, str(out), str(tiny_corpus), settings],
                         capture_output=True, text=True, timeout=BOUND, start_new_session=True)
    assert run.returncode == 0, run.stderr[-3000:]
    message = json.loads(run.stdout.splitlines()[-1])["odd_batch"]
    assert message.endswith("among the 2 replicas. Received: batch_size=7")
    difference = max_difference(weights_of(out / "weights.npz"), reference(STEPS))
    print(f"mirrored over 2 logical CPUs against one device, {STEPS} steps: max |difference| {difference:.3g}")
    assert difference < TOLERANCE


def test_a_killed_worker_stops_its_peer_and_resume_restarts_the_pair(tiny_corpus, tmp_path, reference):
    out = tmp_path / "m"

    def pair(*extra):
        configs = tf_configs(2)
        return [[sys.executable, "-m", "textgen", "train", str(tiny_corpus), "--out", str(out), *cli_args(),
                 "--strategy", "multiworker", "--peer-timeout", "120", *extra] for _ in configs], \
               [{"TF_CONFIG": config} for config in configs]

    # Far more steps than will run: worker 1 is killed once the chief has checkpointed.
    commands, envs = pair("--max-steps", "100000")
    envs[1]["TMPDIR"] = str(tmp_path)  # a killed worker leaves its scratch folder: keep it out of /tmp
    processes = [start(command, env) for command, env in zip(commands, envs)]
    deadline = time.monotonic() + BOUND
    latest = out / "checkpoints" / "latest"
    try:
        while not latest.exists() and time.monotonic() < deadline and processes[0].poll() is None:
            time.sleep(0.05)
        assert latest.exists(), processes[0].communicate(timeout=5)[1].decode()[-3000:]
        os.killpg(processes[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = processes[0].communicate(timeout=BOUND)
        survivor_seconds = time.monotonic() - killed
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    stderr = stderr.decode()
    assert processes[0].returncode == 75, stderr[-3000:]
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: lost ") and "worker 1" in last_line and "--resume" in last_line
    assert "Traceback" not in stderr
    assert survivor_seconds < 60
    assert not (out / "manifest.json").exists()

    # --resume on both: the pair carries on from the chief's last checkpoint and finishes.
    checkpointed = int(latest.read_text().strip().split("-")[1])
    steps = checkpointed + 7
    commands, envs = pair("--resume", "--max-steps", str(steps))
    logs = [open(tmp_path / f"resume{i}.log", "wb") for i in range(2)]
    codes = run_all(commands, envs, logs)
    texts = [(tmp_path / f"resume{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], texts
    assert f"resuming from step {checkpointed}" in texts[0]
    assert f"following the chief's run from step {checkpointed}" in texts[1]
    assert textgen.load(out).manifest["metrics"]["steps"] == steps
    difference = max_difference(weights_of(out / "weights.npz"), reference(steps))
    print(f"killed at step {checkpointed}, resumed to {steps}, against one process: max |difference| {difference:.3g}")
    assert difference < TOLERANCE


def test_tf_config_is_checked_with_clear_errors():
    cluster = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}
    spec = read_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert (spec.is_chief, spec.num_workers, spec.worker_index, spec.task_name) == (False, 2, 1, "worker 1")
    with_chief = {"chief": ["a:1"], **cluster}
    spec = read_tf_config(json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}}))
    assert (spec.is_chief, spec.num_workers, spec.worker_index) == (False, 3, 1)
    assert spec.leader == "/job:chief/replica:0/task:0"
    bad = {
        "": "needs TF_CONFIG",
        "{": "not valid JSON",
        json.dumps({"cluster": cluster}): '"cluster" and "task"',
        json.dumps({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps"}}): "only chief and worker",
        json.dumps({"cluster": {"worker": ["nohost"]}, "task": {"type": "worker"}}): "not \"host:port\"",
        json.dumps({"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker"}}): "twice",
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}}): "from 0 to 1",
        json.dumps({"cluster": cluster, "task": {"type": "chief"}}): "task type",
    }
    for raw, expected in bad.items():
        with pytest.raises(ConfigError, match="Received: TF_CONFIG=") as info:
            read_tf_config(raw)
        assert expected in str(info.value)


def test_strategy_settings_are_refused_before_anything_starts():
    from textgen.training.tf_config import ClusterSettings

    with pytest.raises(ConfigError, match="strategy must be one of default, mirrored, multiworker"):
        ClusterSettings("ring")
    with pytest.raises(ConfigError, match="devices applies to --strategy mirrored only"):
        ClusterSettings("default", devices=2)
    with pytest.raises(ConfigError, match="Received: devices=0"):
        ClusterSettings("mirrored", devices=0)


def test_a_worker_reads_only_its_rows_of_each_batch():
    from textgen.data.windows import TrainWindows

    windows = TrainWindows(np.arange(5000), 10, 8, seed=4)
    x, y = windows.batch(2, 3)  # (8, 10): the global batch
    part_x, part_y = windows.batch(2, 3, rows=slice(4, 8))  # worker 1 of 2 reads rows 4 to 7 only
    assert np.array_equal(part_x, x[4:8]) and np.array_equal(part_y, y[4:8])
    streamed = list(windows.epoch_batches(2, 3, 5, rows=slice(4, 8)))
    assert len(streamed) == 2 and streamed[0][0].shape == (4, 10)
    assert np.array_equal(streamed[0][0], x[4:8]) and np.array_equal(streamed[1][1], windows.batch(2, 4)[1][4:8])


def test_a_worker_whose_peer_never_starts_gives_up_after_the_peer_timeout(tiny_corpus, tmp_path):
    config = tf_configs(2)[1]  # worker 1 of 2; worker 0 never starts
    command = [sys.executable, "-m", "textgen", "train", str(tiny_corpus), "--out", str(tmp_path / "m"), *cli_args(),
               "--max-steps", "5", "--strategy", "multiworker", "--peer-timeout", "5s"]
    process = start(command, {"TF_CONFIG": config})
    began = time.monotonic()
    code = finish(process, began + BOUND)
    stderr = process.stderr.read().decode()
    assert code == 75, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("Error: ") and "Traceback" not in stderr
    assert time.monotonic() - began < 90  # start-up plus the 5 s wait, not a hang
    assert not (tmp_path / "m").exists()
