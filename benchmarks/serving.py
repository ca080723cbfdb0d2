"""Serving under load: ``textgen serve`` on loopback with 1 to 256 streaming clients, against the same rows in-process.

    python benchmarks/serving.py                 # the full run (about 6 minutes): 1, 8, 64, 256 clients, ...
    python benchmarks/serving.py --quick         # a smoke run: tiny counts, start-ups overlapping; figures mean nothing
    python benchmarks/serving.py --levels 1 8 64 --duration 10 --memory-requests 2000   # a shorter run

The server runs as ``textgen serve MODEL --port 0`` in a process of its own;
this process is the load client: asyncio with raw HTTP/1.1 streams (one
keep-alive connection per client, the server-sent events split by hand, JSON
read only for the ``token``, ``sample`` and ``/health`` bodies), so that it
takes as little of the machine as it can. Its CPU time is reported beside
the server's.

Each client loops: POST /v1/generate with ``stream: true``, the prompt, a
fixed length and a seed no other request uses; read the events to ``done``;
send the next. At each level the clients run ``--warmup`` seconds, then a
window of ``--duration`` seconds that the figures come from, then finish the
requests they have open (every request is checked, none is cut off):

* tokens/s: tokens received by all clients within the window / its length;
* TTFT: from sending a request to its first ``token`` event with text, for
  requests sent within the window;
* per-token latency: for each ``token`` event after a request's first, the
  time since that request's previous ``token`` event divided by the tokens
  the event carries (the server sends a row's first text at once, then its
  text every ``--chunk-tokens`` tokens), for requests sent within the window;
* failures: a status other than 200, an ``error`` event, a response that
  ends without ``done``, a sample shorter than asked (or whose ``token``
  texts do not add up to it), or no answer within ``--timeout`` (lost).

The same row counts run in-process (``model.generate`` with that many rows,
the same length; in a process of its own, before the server starts), and
one stream runs as ``textgen sample`` from a new process, end to end.

Then: clients that leave mid-stream (they read their first token and close
the connection): how long until ``/health`` shows their rows gone, and what
the clients that stayed saw before, while and after; and the server's RSS
(VmRSS) after ``--memory-warmup`` short requests and after
``--memory-requests`` more (64 clients, length 20), both read with the server
idle. The exit status of the server after SIGTERM must be 0. A table and a
JSON line of every figure go to stdout; the exit status is 1 if any request
failed or the server did not stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import itertools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

from textgen.config import CHUNK_TOKENS


# --- the in-process side: a process of its own -------------------------------------------------

def in_process_worker(model_name: str, prompt: str, length: int, rows: list[int], repeats: int) -> None:
    """Print one JSON line: for each row count, the tokens/s of each timed ``model.generate`` call."""
    import textgen

    model = textgen.load(model_name)
    result = {}
    for count in rows:
        prompts = [prompt] * count
        model.generate(prompts, length=length, seed=1)  # trace and warm up
        runs = []
        for repeat in range(repeats):
            began = time.perf_counter()
            model.generate(prompts, length=length, seed=2 + repeat)
            runs.append(count * length / (time.perf_counter() - began))
        result[str(count)] = runs
    print(json.dumps(result))


def run_in_process(args, rows: list[int]) -> dict[int, list[float]]:
    command = [sys.executable, os.path.abspath(__file__), "--in-process-worker", "--model", args.model,
               "--prompt", args.prompt, "--length", str(args.length), "--repeats", str(args.repeats),
               "--levels", *map(str, rows)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the in-process run failed:\n{done.stderr[-3000:]}")
    return {int(key): value for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def run_cli(args) -> list[float]:
    """Seconds for each run of ``textgen sample`` in a new process, start to exit."""
    command = [sys.executable, "-m", "textgen", "sample", args.model, "--prompt", args.prompt,
               "--length", str(args.length), "--seed", "1"]
    seconds = []
    for _ in range(args.cli_repeats):
        began = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise SystemExit(f"textgen sample failed:\n{done.stderr[-3000:]}")
    return seconds


# --- the server process --------------------------------------------------------------------------

class ServerProcess:
    """``textgen serve MODEL --port 0`` as a child; its stderr is read by a thread (and kept)."""

    def __init__(self, model: str, extra: list[str]):
        self.command = [sys.executable, "-m", "textgen", "serve", model, "--host", "127.0.0.1", "--port", "0", *extra]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.pid = self.process.pid
        self.stderr: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)
            if self.url is None and line.startswith("serving ") and " at http://" in line:
                self.url = line.split(" at ", 1)[1].split()[0]
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float) -> tuple[str, int]:
        self._ready.wait(timeout)
        if self.url is None:
            self.process.kill()
            raise SystemExit("the server did not start:\n" + "".join(self.stderr)[-3000:])
        self.ready_seconds = time.perf_counter() - self.started
        parts = urlsplit(self.url)
        return parts.hostname, parts.port

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def thread_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of the server's threads so far: its main thread (the event loop: HTTP and the responses),
        TensorFlow's thread pools, and the other threads (the batcher's loop; threads that ended are missed)."""
        groups = dict.fromkeys(("event_loop", "batcher", "tensorflow"), 0.0)
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/comm") as comm, open(f"/proc/{self.pid}/task/{tid}/stat") as stat:
                    name, fields = comm.read().strip(), stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            group = "event_loop" if tid == str(self.pid) else "tensorflow" if name.startswith("tf_") else "batcher"
            groups[group] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return groups

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -9


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the load client: raw HTTP/1.1 over asyncio streams ----------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection, opened on first use and again after the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            writer, self.reader, self.writer = self.writer, None, None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        """Send a request; the status and headers of its response (the body is left to read)."""
        for attempt in range(2):
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            if body is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            self.writer.write(head.encode("ascii") + b"\r\n" + (body or b""))
            try:
                await self.writer.drain()
                status_line = await self.reader.readline()
            except ConnectionError:
                status_line = b""
            if status_line:
                break
            await self.close()
            if not reused:  # a fresh connection that says nothing: a failure, not an idle connection closed
                raise ConnectionError("the server closed the connection without answering")
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self.remaining = int(headers.get("content-length", "-1"))
        self.closing = headers.get("connection", "").lower() == "close"
        return int(status_line.split()[1]), headers

    async def read(self) -> bytes | None:
        """The next piece of the response's body; None at its end."""
        if self.chunked:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("the connection closed in the middle of the response")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return await self._ended()
            return (await self.reader.readexactly(size + 2))[:-2]
        if self.remaining >= 0:
            if self.remaining == 0:
                return await self._ended()
            data, self.remaining = await self.reader.readexactly(self.remaining), 0
            return data
        data = await self.reader.read(65536)  # no length: the body ends when the connection does
        if not data:
            self.closing = True
            return await self._ended()
        return data

    async def _ended(self) -> None:
        if self.closing:
            await self.close()
        return None

    async def get_json(self, path: str):
        status, _ = await self.send("GET", path)
        body = b""
        while (piece := await self.read()) is not None:
            body += piece
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:200]!r}")
        return json.loads(body)


@dataclasses.dataclass
class Record:
    """One streamed request, as the client saw it."""

    length: int
    sent: float = 0.0
    headers: float | None = None  # when the response's headers arrived (the server sends them before any work)
    first: float | None = None
    events: list = dataclasses.field(default_factory=list)  # (time, characters) of each token event with text
    tokens: int | None = None  # the sample's num_tokens
    sample_chars: int | None = None
    done: bool = False
    error: str | None = None

    def check(self) -> None:
        if self.error is None:
            if not self.done:
                self.error = "no done event"
            elif self.tokens != self.length or sum(chars for _, chars in self.events) != self.sample_chars:
                self.error = "short text"

    def token_events(self) -> list[tuple[float, float]]:
        """(time, tokens) of each token event: characters, scaled to the sample's token count when known."""
        chars = sum(count for _, count in self.events)
        scale = self.tokens / chars if self.tokens and chars else 1.0
        return [(at, count * scale) for at, count in self.events]


class Load:
    """What the clients share: the server's address, the request settings, a seed counter and every record."""

    def __init__(self, host: str, port: int, args):
        self.host, self.port, self.args = host, port, args
        self.seeds = itertools.count(1)
        self.model_name = args.served_name

    def body(self, length: int) -> bytes:
        return json.dumps({"model": self.model_name, "prompt": self.args.prompt, "length": length,
                           "seed": next(self.seeds), "stream": True}).encode("utf-8")

    async def stream(self, connection: Connection, record: Record, leave_after_first: asyncio.Event | None = None,
                     first_seen: asyncio.Event | None = None) -> None:
        """Send one streaming request and read it to its end into ``record``, or, with ``leave_after_first``,
        read to its first token event, wait for that event to be set, and close the connection."""
        body = self.body(record.length)
        record.sent = time.perf_counter()
        status, _ = await connection.send("POST", "/v1/generate", body)
        record.headers = time.perf_counter()
        if status != 200:
            text = b""
            while (piece := await connection.read()) is not None:
                text += piece
            record.error = f"HTTP {status}"
            return
        pending = b""
        while (piece := await connection.read()) is not None:
            pending += piece
            while (cut := pending.find(b"\n\n")) >= 0:
                block, pending = pending[:cut], pending[cut + 2:]
                now = time.perf_counter()
                name, _, data = block.partition(b"\ndata: ")
                if name == b"event: token":
                    chars = len(json.loads(data)["text"])
                    if chars:
                        record.events.append((now, chars))
                        if record.first is None:
                            record.first = now
                            if leave_after_first is not None:
                                first_seen.set()
                                await leave_after_first.wait()
                                await connection.close()
                                record.error = "left"
                                return
                elif name == b"event: sample":
                    sample = json.loads(data)
                    record.tokens, record.sample_chars = sample["num_tokens"], len(sample["text"])
                elif name == b"event: done":
                    record.done = True
                elif name == b"event: error":
                    record.error = "error event: " + data.decode("utf-8", "replace")[:200]

    async def one(self, connection: Connection, length: int) -> Record:
        record = Record(length)
        try:
            await asyncio.wait_for(self.stream(connection, record), self.args.timeout)
        except asyncio.TimeoutError:
            record.error = "timeout (lost)"
            await connection.close()
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:200]
            await connection.close()
        record.check()
        return record

    async def clients(self, count: int, length: int, until: float) -> list[Record]:
        """``count`` clients each sending requests back to back until ``until`` (perf_counter); every record."""
        records: list[Record] = []

        async def client() -> None:
            connection = Connection(self.host, self.port)
            while time.perf_counter() < until:
                records.append(await self.one(connection, length))
            await connection.close()

        await asyncio.gather(*(client() for _ in range(count)))
        return records

    async def requests(self, count: int, concurrency: int, length: int) -> list[Record]:
        """``count`` requests in all, by ``concurrency`` clients."""
        records: list[Record] = []
        left = iter(range(count))

        async def client() -> None:
            connection = Connection(self.host, self.port)
            for _ in left:
                records.append(await self.one(connection, length))
            await connection.close()

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return records


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    at = (len(ordered) - 1) * fraction
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def failures(records: list[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        if record.error is not None:
            kind = record.error.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def window_figures(records: list[Record], start: float, end: float) -> dict:
    """Tokens/s received within [start, end), and TTFT and per-token latencies of the requests sent within it."""
    tokens = sum(count for record in records for at, count in record.token_events() if start <= at < end)
    inside = [record for record in records if start <= record.sent < end]
    ttft = [(record.first - record.sent) * 1000 for record in inside if record.first is not None]
    to_headers = [(record.headers - record.sent) * 1000 for record in inside if record.headers is not None]
    to_first = [(record.first - record.headers) * 1000 for record in inside
                if record.first is not None and record.headers is not None]
    per_token, gaps = [], []
    for record in inside:
        events = record.token_events()
        for (before, _), (at, count) in zip(events, events[1:]):
            gaps.append((at - before) * 1000)
            per_token.append((at - before) * 1000 / count)
    return {"tokens_per_s": tokens / (end - start), "requests_in_window": len(inside),
            "ttft_ms_p50": percentile(ttft, 0.5), "ttft_ms_p99": percentile(ttft, 0.99),
            "ttft_ms_max": max(ttft, default=None),
            "headers_ms_p50": percentile(to_headers, 0.5), "headers_ms_p99": percentile(to_headers, 0.99),
            "headers_to_first_ms_p50": percentile(to_first, 0.5), "headers_to_first_ms_p99": percentile(to_first, 0.99),
            "per_token_ms_p50": percentile(per_token, 0.5), "per_token_ms_p99": percentile(per_token, 0.99),
            "event_gap_ms_p50": percentile(gaps, 0.5), "event_gap_ms_p99": percentile(gaps, 0.99),
            "event_gap_ms_max": max(gaps, default=None)}


class Meter:
    """CPU seconds of the client and the server, and wall time, between ``start`` and ``stop``."""

    def __init__(self, server: ServerProcess):
        self.server = server

    def start(self) -> None:
        self.began = (time.perf_counter(), client_cpu_seconds(), self.server.cpu_seconds())
        self.threads = self.server.thread_cpu_seconds()

    def stop(self) -> dict:
        wall, client, server = (time.perf_counter() - self.began[0], client_cpu_seconds() - self.began[1],
                                self.server.cpu_seconds() - self.began[2])
        threads = {f"server_{name}_cpu_pct": 100 * (seconds - self.threads[name]) / wall
                   for name, seconds in self.server.thread_cpu_seconds().items()}
        return {"client_cpu_s": client, "server_cpu_s": server, "client_cpu_pct": 100 * client / wall,
                "server_cpu_pct": 100 * server / wall, **threads}


async def idle_health(connection: Connection, timeout: float = 30) -> dict:
    """``/health`` once the server holds no request (or after ``timeout`` seconds)."""
    deadline = time.perf_counter() + timeout
    while True:
        health = await connection.get_json("/health")
        rows = sum(item["active_rows"] for item in health["models"].values())
        if (rows == 0 and health["open_requests"] == 0) or time.perf_counter() > deadline:
            return health
        await asyncio.sleep(0.05)


async def level(load: Load, server: ServerProcess, clients: int, args) -> dict:
    """``clients`` clients for warm-up + window; the window's figures."""
    meter = Meter(server)
    began = time.perf_counter()
    start, end = began + args.warmup, began + args.warmup + args.duration

    async def measure():
        await asyncio.sleep(start - time.perf_counter())
        meter.start()
        await asyncio.sleep(end - time.perf_counter())
        return meter.stop()

    records, cpu = await asyncio.gather(load.clients(clients, args.length, end), measure())
    figures = window_figures(records, start, end)
    return {"clients": clients, **figures, **cpu, "requests": len(records), "failures": failures(records),
            "drain_s": time.perf_counter() - end}


async def memory(load: Load, server: ServerProcess, health: Connection, args) -> dict:
    """RSS after ``memory_warmup`` short requests, then after ``memory_requests`` more, idle both times."""
    warm = await load.requests(args.memory_warmup, args.memory_concurrency, args.memory_length)
    await idle_health(health)
    await asyncio.sleep(1)
    after_warmup = server.rss_mb()
    trace = [(0, after_warmup)]
    records: list[Record] = []
    step = max(1, args.memory_requests // 10)
    began = time.perf_counter()
    meter = Meter(server)
    meter.start()
    for done in range(0, args.memory_requests, step):
        records += await load.requests(min(step, args.memory_requests - done), args.memory_concurrency,
                                       args.memory_length)
        trace.append((len(records), server.rss_mb()))
    seconds = time.perf_counter() - began
    cpu = meter.stop()
    last_health = await idle_health(health)
    await asyncio.sleep(1)
    after = server.rss_mb()
    return {"warmup_requests": len(warm), "requests": len(records), "length": args.memory_length,
            "concurrency": args.memory_concurrency, "rss_mb_after_warmup": after_warmup, "rss_mb_after": after,
            "growth_mb": after - after_warmup, "rss_mb_trace": trace, "requests_per_s": len(records) / seconds,
            "failures": failures(warm + records), "open_requests_after": last_health["open_requests"], **cpu}


async def disconnects(load: Load, health: Connection, args) -> dict:
    """``steady`` clients stream throughout; ``leavers`` clients join, read their first token and close."""
    steady, leavers, phase = args.disconnect_steady, args.disconnect_clients, args.disconnect_phase
    stop_at = [float("inf")]
    records: list[Record] = []

    async def steady_client() -> None:
        connection = Connection(load.host, load.port)
        while time.perf_counter() < stop_at[0]:
            records.append(await load.one(connection, args.length))
        await connection.close()

    async def rows_now() -> tuple[int, int]:
        state = await health.get_json("/health")
        return sum(item["active_rows"] for item in state["models"].values()), state["open_requests"]

    running = [asyncio.ensure_future(steady_client()) for _ in range(steady)]
    await asyncio.sleep(args.warmup)
    baseline = (time.perf_counter(), None)
    await asyncio.sleep(phase)
    baseline = (baseline[0], time.perf_counter())

    leave = asyncio.Event()
    seen = [asyncio.Event() for _ in range(leavers)]
    left = [Record(args.max_length) for _ in range(leavers)]
    connections = [Connection(load.host, load.port) for _ in range(leavers)]
    joined = time.perf_counter()

    async def leaver(connection: Connection, record: Record, event: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(load.stream(connection, record, leave, event), args.timeout)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            event.set()
            await connection.close()

    leaving = [asyncio.ensure_future(leaver(*parts)) for parts in zip(connections, left, seen)]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in seen)), args.timeout)
    during = (time.perf_counter(), None)
    await asyncio.sleep(phase)
    rows_before, open_before = await rows_now()
    during = (during[0], time.perf_counter())
    leave.set()
    await asyncio.gather(*leaving)
    closed = time.perf_counter()
    rows_gone = released = None
    polls = []
    while time.perf_counter() - closed < args.timeout and (rows_gone is None or released is None):
        rows, open_requests = await rows_now()
        now = time.perf_counter() - closed
        polls.append((round(now * 1000, 1), rows, open_requests))
        if rows_gone is None and rows <= steady:
            rows_gone = now
        if released is None and open_requests <= steady:
            released = now
        await asyncio.sleep(0.005)
    after = (time.perf_counter(), None)
    await asyncio.sleep(phase)
    after = (after[0], time.perf_counter())
    stop_at[0] = time.perf_counter()
    await asyncio.gather(*running)
    last = await idle_health(health)

    def steady_figures(window):
        figures = window_figures(records, *window)
        return {key: figures[key] for key in ("tokens_per_s", "per_token_ms_p50", "per_token_ms_p99",
                                              "event_gap_ms_max")}

    return {"steady_clients": steady, "leaving_clients": leavers, "leaving_length": args.max_length,
            "first_tokens_s": during[0] - joined, "rows_while_in": rows_before, "open_while_in": open_before,
            "rows_gone_s": rows_gone, "requests_released_s": released, "polls": polls[:40],
            "steady_before": steady_figures(baseline), "steady_while_in": steady_figures(during),
            "steady_after": steady_figures(after), "steady_requests": len(records),
            "steady_failures": failures(records), "left_with_tokens": sum(record.first is not None for record in left),
            "leaving_failures": failures([record for record in left if record.error != "left"]),
            "rows_after": sum(item["active_rows"] for item in last["models"].values()),
            "open_requests_after": last["open_requests"]}


async def server_phases(host: str, port: int, server: ServerProcess, args) -> dict:
    load = Load(host, port, args)
    health = Connection(host, port)
    results = {"levels": [], "rss_mb": {"ready": server.rss_mb()}, "idle_checks": []}
    # A few requests first, so that the first level does not meet anything the server does once.
    await load.requests(4, 2, min(args.length, 32))
    for clients in args.levels:
        print(f"  {clients} clients ...", file=sys.stderr, flush=True)
        results["levels"].append(await level(load, server, clients, args))
        state = await idle_health(health)
        results["idle_checks"].append({"after": f"{clients} clients", "open_requests": state["open_requests"],
                                       "active_rows": sum(item["active_rows"] for item in state["models"].values())})
        results["rss_mb"][f"after {clients} clients"] = server.rss_mb()
    if args.disconnect_clients:
        print("  clients leaving mid-stream ...", file=sys.stderr, flush=True)
        results["disconnect"] = await disconnects(load, health, args)
    if args.memory_requests:
        print("  memory ...", file=sys.stderr, flush=True)
        results["memory"] = await memory(load, server, health, args)
    await health.close()
    return results


# --- the report ------------------------------------------------------------------------------------

def number(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def print_table(header: list[str], rows: list[list]) -> None:
    """A markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def report(args, figures: dict) -> None:
    in_process = figures["in_process"]
    print(f"\nServer: `{' '.join(figures['server_command'])}` (ready after {figures['server_ready_s']:.1f} s); "
          f"prompt {args.prompt!r}, {args.length} tokens per request, default sampling settings, one seed per request. "
          f"Each level: {args.warmup:g} s warm-up, then a {args.duration:g} s window. In-process: `model.generate` "
          f"with as many rows, median of {args.repeats} calls after a warm-up call, before the server started and "
          f"again after it stopped; the mean of the two medians.")
    print("Per-token latency: the gap between successive token events of a request divided by the tokens in the "
          f"event (a row's first text is sent at once, then every {CHUNK_TOKENS} tokens, the server's default "
          f"--chunk-tokens, unless --server-options sets another). "
          "CPU %: of one core, over the window (the machine has " f"{os.cpu_count()} cores).\n")
    print_table(["clients", "server tokens/s", "in-process tokens/s", "server / in-process", "TTFT p50 ms",
                 "TTFT p99 ms", "per-token p50 ms", "per-token p99 ms", "event gap p99 ms", "requests", "failed",
                 "client CPU %", "server CPU %"],
                [[row["clients"], number(row["tokens_per_s"]), number(row["in_process_tokens_per_s"]),
                  number(row["ratio"], 2), number(row["ttft_ms_p50"], 1), number(row["ttft_ms_p99"], 1),
                  number(row["per_token_ms_p50"], 2), number(row["per_token_ms_p99"], 2),
                  number(row["event_gap_ms_p99"], 1), row["requests"], sum(row["failures"].values()),
                  number(row["client_cpu_pct"], 1), number(row["server_cpu_pct"], 1)] for row in figures["levels"]])
    print("\nWhere TTFT goes: request sent -> response headers (the HTTP layer; the server sends them before it "
          "queues the request), then -> first token (the queue, the prompt, the first call of the loop).\n")
    print_table(["clients", "to headers p50 ms", "to headers p99 ms", "then to first token p50 ms", "p99 ms",
                 "event gap p50 ms", "event gap p99 ms", "server CPU %: event loop", "batcher", "TensorFlow pools"],
                [[row["clients"], number(row["headers_ms_p50"], 1), number(row["headers_ms_p99"], 1),
                  number(row["headers_to_first_ms_p50"], 1), number(row["headers_to_first_ms_p99"], 1),
                  number(row["event_gap_ms_p50"], 1), number(row["event_gap_ms_p99"], 1),
                  number(row["server_event_loop_cpu_pct"], 0), number(row["server_batcher_cpu_pct"], 0),
                  number(row["server_tensorflow_cpu_pct"], 0)] for row in figures["levels"]])
    cli = statistics.median(figures["cli_seconds"])
    one_row = statistics.median(in_process[1]) if 1 in in_process else None
    print(f"\nOne stream: `textgen sample` end to end (a new process: start-up, load, compile, {args.length} tokens) "
          f"{args.length / cli:,.1f} tokens/s ({cli:.2f} s, median of {len(figures['cli_seconds'])}); "
          f"in-process one row {number(one_row)} tokens/s; the server at 1 client "
          + next((f"{number(row['tokens_per_s'])} tokens/s" for row in figures["levels"] if row["clients"] == 1),
                 "(not run)") + ".")
    for row in figures["levels"]:
        if row["failures"]:
            print(f"FAILURES at {row['clients']} clients: {row['failures']}")
    if "disconnect" in figures:
        gone = figures["disconnect"]
        print(f"\nDisconnects: {gone['leaving_clients']} clients (length {gone['leaving_length']}) joined "
              f"{gone['steady_clients']} steady ones, read their first token ({gone['first_tokens_s']:.2f} s), "
              f"held {gone['rows_while_in']} rows / {gone['open_while_in']} open requests, then closed their "
              f"connections: /health showed their rows gone after {number(gone['rows_gone_s'] and gone['rows_gone_s'] * 1000, 1)} "
              f"ms, their requests released after {number(gone['requests_released_s'] and gone['requests_released_s'] * 1000, 1)} "
              f"ms; after the phase {gone['rows_after']} rows, {gone['open_requests_after']} open requests.")
        print()
        print_table(["steady clients", "tokens/s", "per-token p50 ms", "per-token p99 ms", "largest event gap ms"],
                    [[name.replace("_", " "), number(part["tokens_per_s"]), number(part["per_token_ms_p50"], 2),
                      number(part["per_token_ms_p99"], 2), number(part["event_gap_ms_max"], 1)]
                     for name, part in ((name, gone[f"steady_{name}"]) for name in ("before", "while_in", "after"))])
        print(f"\nSteady clients: {gone['steady_requests']} requests, failures {gone['steady_failures'] or 'none'}.")
    if "memory" in figures:
        mem = figures["memory"]
        print(f"\nMemory: server RSS {mem['rss_mb_after_warmup']:,.1f} MB after {mem['warmup_requests']:,} warm-up "
              f"requests, {mem['rss_mb_after']:,.1f} MB after {mem['requests']:,} more (length {mem['length']}, "
              f"{mem['concurrency']} clients, {mem['requests_per_s']:,.0f} requests/s, client CPU "
              f"{mem['client_cpu_pct']:.0f}%, server {mem['server_cpu_pct']:.0f}%): growth {mem['growth_mb']:+,.1f} MB. "
              "Along the way (requests, MB): "
              + ", ".join(f"{count:,} {mb:,.1f}" for count, mb in mem["rss_mb_trace"])
              + f". Failures: {mem['failures'] or 'none'}.")
    print("\nServer RSS MB: " + ", ".join(f"{key} {value:,.1f}" for key, value in figures["rss_mb"].items()) + ".")
    print(f"Client process CPU, whole run: {figures['client_cpu_s']:.1f} s over {figures['wall_s']:.0f} s. "
          f"Server exit status after SIGTERM: {figures['server_exit']}. Load average at the start and end: "
          f"{figures['load_start']} / {figures['load_end']}.")


_stage = [None, 0.0]


def stage(name: str | None) -> None:
    """Say on stderr how long the stage before took, and which one starts."""
    now = time.perf_counter()
    if _stage[0] is not None:
        print(f"  ({_stage[0]}: {now - _stage[1]:.1f} s)", file=sys.stderr, flush=True)
    if name is not None:
        print(f"{name} ...", file=sys.stderr, flush=True)
    _stage[:] = [name, now]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shakespeare", help="a shipped model's name or a model directory")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--length", type=int, default=200, help="tokens per streamed request")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 64, 256], help="concurrent clients")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds at each level before the window")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of each level's window")
    parser.add_argument("--repeats", type=int, default=3, help="timed in-process calls per row count")
    parser.add_argument("--cli-repeats", type=int, default=3, help="runs of textgen sample")
    parser.add_argument("--memory-warmup", type=int, default=500)
    parser.add_argument("--memory-requests", type=int, default=10_000, help="0 skips the memory phase")
    parser.add_argument("--memory-length", type=int, default=20)
    parser.add_argument("--memory-concurrency", type=int, default=64)
    parser.add_argument("--disconnect-clients", type=int, default=32, help="clients that leave mid-stream (0: skip)")
    parser.add_argument("--disconnect-steady", type=int, default=8, help="clients that stream throughout")
    parser.add_argument("--disconnect-phase", type=float, default=5.0, help="seconds before, while and after")
    parser.add_argument("--max-length", type=int, default=2000, help="the leaving clients' length (the server's "
                                                                       "--max-length is set to it)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take before it is lost")
    parser.add_argument("--server-options", default="", help="more options for textgen serve, e.g. '--chunk-tokens 8'")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny counts, stages overlapping")
    parser.add_argument("--in-process-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_worker:
        in_process_worker(args.model, args.prompt, args.length, args.levels, args.repeats)
        return 0
    if args.quick:
        args.length, args.levels, args.warmup, args.duration = 20, [1, 2], 0.5, 1.5
        args.repeats, args.cli_repeats, args.timeout = 1, 1, 60.0
        args.memory_warmup, args.memory_requests, args.memory_length, args.memory_concurrency = 10, 40, 10, 8
        args.disconnect_clients, args.disconnect_steady, args.disconnect_phase, args.max_length = 4, 2, 0.5, 400
    args.served_name = os.path.basename(os.path.normpath(args.model)) or args.model

    print("$ python benchmarks/serving.py " + " ".join(sys.argv[1:]))
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f"; load average {os.getloadavg()[0]:.2f}")
    began = time.perf_counter()
    load_start = f"{os.getloadavg()[0]:.2f}"
    extra = ["--max-length", str(max(args.max_length, args.length)),
             "--max-requests", str(max(512, 2 * max(args.levels) + args.disconnect_clients + 8))]
    extra += args.server_options.split()
    rows = sorted(set(args.levels))
    if args.quick:  # everything at once: the figures mean nothing, the run is short
        stage("in-process runs, textgen sample and the server's start, at once")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            in_process_job, cli_job = pool.submit(run_in_process, args, rows), pool.submit(run_cli, args)
            server = ServerProcess(args.model, extra)
            host, port = server.wait_ready(600)
            in_process, cli_seconds = in_process_job.result(), cli_job.result()
    else:
        stage("in-process runs")
        in_process = run_in_process(args, rows)
        stage("textgen sample runs")
        cli_seconds = run_cli(args)
        stage("starting the server")
        server = ServerProcess(args.model, extra)
        host, port = server.wait_ready(600)
    stage("the server's phases")
    try:
        figures = asyncio.run(server_phases(host, port, server, args))
    finally:
        stage("stopping the server")
        exit_status = server.stop()
        stage(None)
    if not args.quick:
        # The machine's speed drifts over minutes: the in-process runs are made again after the server's
        # phases, and each ratio is to the mean of the medians before and after.
        stage("in-process runs again")
        in_process_after = run_in_process(args, rows)
        stage(None)
    else:
        in_process_after = {}
    figures["server_command"] = ["textgen", *server.command[3:]]
    figures["server_ready_s"] = server.ready_seconds
    figures["server_exit"] = exit_status
    figures["server_stderr_tail"] = "".join(server.stderr[-5:])
    figures["in_process"] = in_process
    figures["in_process_after"] = in_process_after
    figures["cli_seconds"] = cli_seconds
    figures["cli_tokens_per_s"] = args.length / statistics.median(cli_seconds)
    for row in figures["levels"]:
        runs = in_process.get(row["clients"])
        medians = [statistics.median(group[row["clients"]]) for group in (in_process, in_process_after)
                   if group.get(row["clients"])]
        row["in_process_before_after"] = medians
        row["in_process_tokens_per_s"] = statistics.mean(medians) if medians else None
        row["ratio"] = row["tokens_per_s"] / row["in_process_tokens_per_s"] if runs else None
    figures["client_cpu_s"] = client_cpu_seconds()
    figures["wall_s"] = time.perf_counter() - began
    figures["load_start"], figures["load_end"] = load_start, f"{os.getloadavg()[0]:.2f}"
    report(args, figures)
    print(json.dumps({"benchmark": "serving", "model": args.model, "length": args.length, **figures}))
    problems = [f"{row['clients']} clients: {row['failures']}" for row in figures["levels"] if row["failures"]]
    for phase in ("disconnect", "memory"):
        part = figures.get(phase, {})
        if part.get("steady_failures") or part.get("failures") or part.get("open_requests_after"):
            problems.append(f"{phase}: failures {part.get('steady_failures') or part.get('failures')}, "
                            f"open requests after {part.get('open_requests_after')}")
    if exit_status != 0:
        problems.append(f"the server exited with {exit_status} after SIGTERM")
    if problems:
        print("problems: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
