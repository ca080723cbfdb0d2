"""``textgen serve`` as a user runs it: a process that says where it listens and stops cleanly on SIGTERM."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest


def start(*args):
    """``textgen serve ARGS --port 0``; returns the process and the URL it printed once listening."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-m", "textgen", "serve", *args, "--port", "0"], env=env,
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"at (http://\S+) ", line)
        if match:
            return process, match.group(1), lines
    process.kill()
    pytest.fail("the server did not start: " + "".join(lines))


def test_sigterm_lets_the_streams_in_flight_finish_then_exits_0(tiny_model_dir):
    process, url, lines = start(str(tiny_model_dir))
    try:
        assert "only this machine can reach it" in lines[-1] and url.startswith("http://127.0.0.1:")
        body = {"prompt": ["The "] * 48, "length": 2000, "seed": 1, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as client, client.stream("POST", "/v1/generate",
                                                                              json=body) as response:
            stream = response.iter_lines()
            assert next(line for line in stream if line.startswith("event: token"))
            process.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            time.sleep(0.5)
            host, port = url.rsplit("/", 1)[1].split(":")
            with pytest.raises(OSError):  # no new connections once SIGTERM has arrived
                socket.create_connection((host, int(port)), timeout=5).close()
            rest = list(stream)
            print(f"the stream ended {time.monotonic() - sent:.2f} s after SIGTERM")
            assert time.monotonic() - sent > 0.5  # it was still running when new connections were refused
        assert process.wait(60) == 0
        done = [json.loads(line[len("data: "):]) for line in rest if line.startswith("data: ") and '"samples"' in line]
        assert done == [{"model": tiny_model_dir.name, "seed": 1, "samples": 48}]  # the stream ended whole
        assert sum(line == "event: sample" for line in rest) == 48
        assert "stopped" in process.stderr.read()
    finally:
        process.kill()


def test_after_the_grace_period_the_server_exits_0_anyway(tiny_model_dir):
    process, url, _ = start(str(tiny_model_dir), "--grace", "1s", "--max-length", "100000")
    try:
        body = {"prompt": ["The "] * 8, "length": 100000, "seed": 1, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as client, client.stream("POST", "/v1/generate",
                                                                              json=body) as response:
            stream = response.iter_lines()
            assert next(line for line in stream if line.startswith("event: token"))
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            assert time.monotonic() - sent < 15
    finally:
        process.kill()


def test_a_port_in_use_is_one_line_and_exit_1(tiny_model_dir):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "textgen", "serve", str(tiny_model_dir), "--port", str(port)],
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    finally:
        taken.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: Address already in use. "
                                                  f"Received: port={port}"]


def test_a_missing_model_is_one_line_and_exit_1(tmp_path):
    result = subprocess.run([sys.executable, "-m", "textgen", "serve", str(tmp_path / "nope"), "--port", "0"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "nope" in errors[0] and "Traceback" not in result.stderr
