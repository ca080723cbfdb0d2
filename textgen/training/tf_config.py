"""How a run is spread over devices and hosts: the strategy settings, and ``TF_CONFIG``, read and checked.

``ClusterSettings`` names the strategy (one device, this host's devices, or
the hosts of ``TF_CONFIG``) with its two knobs. ``TF_CONFIG`` is the standard
description of a multi-worker cluster.

Every worker gets the same ``cluster`` and its own ``task``::

    {"cluster": {"worker": ["host-a:12345", "host-b:12345"]},
     "task": {"type": "worker", "index": 0}}

An optional ``chief`` job (one address) is the chief; without one, worker 0
is. The chief is the coordination service's leader, writes the model
directory and checkpoints, and sends the run's settings to the others.
Parameter servers and evaluators are not supported. Plain Python, no
TensorFlow: errors come before anything starts, and ``textgen --help`` can
list the strategies without loading TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from textgen.config import check_float, check_int, fail
from textgen.errors import ConfigError

# --strategy: one device; this host's GPUs (or logical CPU devices); the hosts of TF_CONFIG.
STRATEGIES = ("default", "mirrored", "multiworker")
# How long a worker waits for the others to start, and for each step's all-reduce.
DEFAULT_PEER_TIMEOUT = 300.0
JOBS = ("chief", "worker")  # in the order TensorFlow numbers tasks: the chief first
_ADDRESS = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")
_SHOWN = 400  # characters of TF_CONFIG quoted in an error


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """How a run is spread: ``strategy`` (one of ``STRATEGIES``), the number of ``devices``
    (mirrored only; None: every GPU, or one CPU device), and ``peer_timeout``, the
    seconds a worker waits for the others to start and for each step's all-reduce."""

    strategy: str = "default"
    devices: int | None = None
    peer_timeout: float = DEFAULT_PEER_TIMEOUT

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            fail(f"strategy must be one of {', '.join(STRATEGIES)}", "strategy", self.strategy)
        if self.devices is not None:
            check_int("devices", self.devices, 1, 4096)
            if self.strategy != "mirrored":
                fail("devices applies to --strategy mirrored only (multiworker uses every GPU of a host, or its "
                     "CPU; choose GPUs with CUDA_VISIBLE_DEVICES)", "strategy", self.strategy)
        check_float("peer_timeout", self.peer_timeout, 1.0, 1e6)


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """A checked TF_CONFIG: ``cluster`` (job -> addresses), ``task_type`` and ``task_index``."""

    cluster: dict
    task_type: str
    task_index: int

    @property
    def is_chief(self) -> bool:
        """The chief task, or worker 0 when there is no chief."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_index == 0

    @property
    def num_workers(self) -> int:
        """Every task that trains: the chief and the workers."""
        return sum(len(self.cluster.get(job, ())) for job in JOBS)

    @property
    def worker_index(self) -> int:
        """This task's place among all training tasks, the chief (if any) being 0."""
        if self.task_type == "chief":
            return 0
        return self.task_index + len(self.cluster.get("chief", ()))

    @property
    def leader(self) -> str:
        """The task that leads the coordination service, as TensorFlow names it."""
        job = "chief" if "chief" in self.cluster else "worker"
        return f"/job:{job}/replica:0/task:0"

    @property
    def task_name(self) -> str:
        """``chief`` or ``worker N``, for messages."""
        return "chief" if self.task_type == "chief" else f"worker {self.task_index}"


def _fail(message: str, raw: str):
    shown = raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "..."
    raise ConfigError(f"{message}. Received: TF_CONFIG={shown!r}")


def read_tf_config(raw: str | None = None) -> ClusterSpec:
    """Parse and check ``TF_CONFIG`` (by default from the environment)."""
    raw = os.environ.get("TF_CONFIG") if raw is None else raw
    if not raw or not raw.strip():
        raise ConfigError("--strategy multiworker needs TF_CONFIG, the cluster and this worker's task as JSON; see "
                          "the README. Received: TF_CONFIG=None")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        _fail(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos})", raw)
    if not (isinstance(data, dict) and isinstance(data.get("cluster"), dict) and isinstance(data.get("task"), dict)):
        _fail('TF_CONFIG must be a JSON object with "cluster" and "task" objects', raw)
    cluster = data["cluster"]
    unknown = sorted(set(cluster) - set(JOBS))
    if unknown:
        _fail(f"TF_CONFIG names a job textgen does not run ({unknown[0]!r}); only chief and worker are supported",
              raw)
    seen = set()
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            _fail(f'TF_CONFIG cluster "{job}" must be a non-empty list of "host:port" addresses', raw)
        for address in addresses:
            match = _ADDRESS.match(address) if isinstance(address, str) else None
            if not match or not 1 <= int(match.group(1)) <= 65535:
                _fail(f'TF_CONFIG cluster "{job}" has an address that is not "host:port": {address!r}', raw)
            if address in seen:
                _fail(f"TF_CONFIG lists the address {address!r} twice", raw)
            seen.add(address)
    if len(cluster.get("chief", [])) > 1:
        _fail("TF_CONFIG may have at most one chief", raw)
    task = data["task"]
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
        _fail(f"TF_CONFIG task type must be one of the cluster's jobs ({', '.join(sorted(cluster))})", raw)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        _fail(f'TF_CONFIG task index must be from 0 to {len(cluster[task_type]) - 1} for "{task_type}"', raw)
    ordered = {job: list(cluster[job]) for job in JOBS if job in cluster}
    return ClusterSpec(ordered, task_type, index)
