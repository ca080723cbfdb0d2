"""Training across devices and hosts with ``tf.distribute``: the strategy, the cluster, the replicated step.

``textgen.train(strategy=...)`` and ``textgen train --strategy`` take
(see ``textgen.training.tf_config.ClusterSettings``):

* ``default``: one device and today's single XLA-compiled step; nothing here runs.
* ``mirrored``: the GPUs of this host, or, without a GPU, its CPU split into
  ``devices`` logical devices (as fast as one; it exercises the same code).
* ``multiworker``: several hosts described by the standard ``TF_CONFIG``.

``model.fit`` is not used (it breaks under ``MultiWorkerMirroredStrategy`` in
Keras 3.15), so the maths is spelled out here. With a global batch of B rows,
T tokens per row and R replicas, each replica gets B / R consecutive rows and
computes ``sum of its (B/R, T) token losses / (B * T)`` and that loss's
gradient; summed over replicas these are exactly the single-device mean loss
and its gradient. The sums happen in cross-replica context and the optimizer
is applied there too: Keras's TensorFlow optimizer all-reduces only when
called in replica context, and there it clips (``global_clipnorm``) each
replica's partial gradient before the all-reduce, which is wrong. Applied to
the summed gradient, clipping sees the global norm, as on one device.

Every worker reads only the rows of each global batch that its replicas own:
the batch order is a pure function of (seed, epoch), so all workers agree on
it without talking. Only the chief writes the model directory and
checkpoints; the others write theirs to a temporary directory that is removed
at exit (the pattern tf.keras used). The chief sends every other worker the
run's settings, tokenizer and, on ``--resume``, all variables and the loop
state through the collectives themselves, so no shared file system is needed.

``tf.distribute`` talks gRPC without authentication or encryption: anyone who
can reach a worker's port can join or disrupt the run. Keep workers on a
private network.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from textgen.backend import keras, tf
from textgen.training.tf_config import ClusterSettings, ClusterSpec, read_tf_config
from textgen.errors import ClusterError, ConfigError
from textgen.model.loss import token_loss

# Broadcasts happen while the chief reads the corpus and trains its tokenizer;
# a dead chief is caught by the coordination service's heartbeats, not by this.
_BROADCAST_TIMEOUT = 7 * 24 * 3600.0
_CHUNK_WORDS = 1 << 23  # 32 MiB of int32 per all-reduce when broadcasting bytes
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                tf.errors.CancelledError)


def _options(timeout: float | None):
    return tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)


def start_cluster(settings: ClusterSettings) -> "Cluster | None":
    """Create the strategy that ``settings`` name; None for ``default`` (no strategy code on that path).

    Must run before TensorFlow runs any op in this process: logical CPU
    devices and the collectives of ``multiworker`` are fixed at start-up.
    ``multiworker`` waits up to ``peer_timeout`` seconds for every worker in
    ``TF_CONFIG`` to start, then raises ``ClusterError``.
    """
    strategy, devices, peer_timeout = settings.strategy, settings.devices, settings.peer_timeout
    if strategy == "default":
        return None
    if strategy == "mirrored":
        return Cluster(_mirrored(devices), "mirrored", None, peer_timeout)
    spec = read_tf_config()
    _configure_coordination(spec, peer_timeout)
    try:
        made = tf.distribute.MultiWorkerMirroredStrategy(communication_options=_options(None))
    except RuntimeError as exc:  # "Collective ops must be configured at program startup"
        raise ConfigError(f"--strategy multiworker must be chosen before TensorFlow runs anything in this process; "
                          f"start a new process ({exc}). Received: strategy='multiworker'") from None
    except _PEER_ERRORS:
        raise ClusterError(f"the workers in TF_CONFIG did not all start within {peer_timeout:g}s; start every "
                           f"worker, each with its own task in TF_CONFIG. Received: task={spec.task_name!r}") from None
    return Cluster(made, "multiworker", spec, peer_timeout)


def _mirrored(devices: int | None) -> tf.distribute.Strategy:
    """MirroredStrategy over this host's GPUs, or over its CPU split into logical devices."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        count = devices or len(gpus)
        if count > len(gpus):
            raise ConfigError(f"this host has {len(gpus)} GPU(s). Received: devices={devices}")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(count)])
    count = devices or 1
    cpu = tf.config.list_physical_devices("CPU")[0]
    # (Listing logical devices would start TensorFlow; reading the configuration does not.)
    if len(tf.config.get_logical_device_configuration(cpu) or [None]) != count:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:  # "Virtual devices cannot be modified after being initialized"
            raise ConfigError(f"the CPU can be split into logical devices only before TensorFlow runs anything in "
                              f"this process; start a new process. Received: devices={devices}") from None
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(count)])


def _configure_coordination(spec: ClusterSpec, peer_timeout: float) -> None:
    """Bound the wait for missing workers at start-up.

    By default the coordination service's leader waits forever for a worker
    that never starts. Registering behind a barrier with a timeout makes every
    worker, leader included, fail after ``peer_timeout``. This is how
    ``MultiWorkerMirroredStrategy`` configures the service itself (it keeps a
    configuration found in place), with two settings it does not expose; if
    TensorFlow's internals move, the strategy's own defaults apply.
    """
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        from tensorflow.python.eager import context

        jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(addresses))
                for job, addresses in spec.cluster.items()]
        ctx = context.context()
        ctx.configure_coordination_service(service_type="standalone", service_leader=spec.leader,
                                           coordinated_jobs=jobs,
                                           cluster_register_timeout_in_ms=int(peer_timeout * 1000))
        ctx.coordination_service.cluster_register_with_barrier = True
    except (ImportError, AttributeError):  # pragma: no cover - depends on the TensorFlow version
        pass


class Cluster:
    """A strategy and this process's place in it: chief or not, replicas, rows owned.

    Attributes: ``strategy``, ``name`` (mirrored, multiworker), ``is_chief``,
    ``task`` (e.g. ``worker 1``), ``num_workers``, ``num_replicas`` (all
    workers), ``peer_timeout`` (seconds).
    """

    def __init__(self, strategy: tf.distribute.Strategy, name: str, spec: ClusterSpec | None, peer_timeout: float):
        self.strategy = strategy
        self.name = name
        self.spec = spec
        self.peer_timeout = float(peer_timeout)
        self.is_chief = spec is None or spec.is_chief
        self.task = "chief" if spec is None else spec.task_name
        self.num_workers = 1 if spec is None else spec.num_workers
        self.num_replicas = strategy.num_replicas_in_sync
        # The global replica ids this worker runs, in order: replica g owns rows [g * b, (g + 1) * b).
        ids = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(ctx.replica_id_in_sync_group))
        self.replica_ids = [int(value) for value in strategy.experimental_local_results(ids)]
        self._scratch = None

    def __repr__(self) -> str:
        return f"Cluster({self.name}, task={self.task!r}, replicas={self.num_replicas})"

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a global batch that the replicas cannot share evenly."""
        if batch_size % self.num_replicas:
            raise ConfigError(f"--batch-size is the global batch and must divide evenly among the "
                              f"{self.num_replicas} replicas. Received: batch_size={batch_size}")

    def local_rows(self, batch_size: int) -> slice:
        """The rows of each global batch that this worker's replicas own, a contiguous slice."""
        per_replica = batch_size // self.num_replicas
        return slice(self.replica_ids[0] * per_replica, (self.replica_ids[-1] + 1) * per_replica)

    def scratch_dir(self) -> Path:
        """Where a worker that is not the chief writes its checkpoints and model; see ``remove_scratch``."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"textgen-{self.task.replace(' ', '-')}-"))
            # Removed at the latest at interpreter exit; only a kill -9 leaves it behind.
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._scratch), ignore_errors=True)
        return self._scratch

    def remove_scratch(self) -> None:
        """Remove what this worker wrote to its scratch directory (the run is over)."""
        if self._scratch is not None:
            self._cleanup()
            self._scratch = None

    def progress_stream(self, stream):
        """The chief's progress goes to ``stream`` as is; another worker's lines start with ``[worker N]``."""
        return stream if self.is_chief or stream is None else PrefixedStream(stream, f"[{self.task}] ")

    @contextlib.contextmanager
    def peer_errors(self):
        """Turn a lost or silent peer into one ``ClusterError`` line."""
        try:
            yield
        except _PEER_ERRORS as exc:
            raise ClusterError(f"{describe_peer_error(exc, self.peer_timeout)}; restart every worker with --resume "
                               f"to continue from the chief's last checkpoint. Received: task={self.task!r}") from None

    @contextlib.contextmanager
    def scope(self):
        """Create variables here: mirrored on every replica (and, across workers, initialized by the chief)."""
        with self.peer_errors(), self.strategy.scope():
            yield

    # Broadcasts: the chief's value, everywhere. Replica 0 runs on the chief; it
    # contributes the value and every other replica zeros, so the sum is exact.

    def _from_chief(self, value: np.ndarray) -> np.ndarray:
        def contribution(ctx):
            return tf.constant(value if ctx.replica_id_in_sync_group == 0 else np.zeros_like(value))

        per_replica = self.strategy.experimental_distribute_values_from_function(contribution)
        with self.peer_errors():
            total = self.strategy.extended.reduce_to(tf.distribute.ReduceOp.SUM, per_replica,
                                                     self.strategy.extended.worker_devices[0],
                                                     options=_options(_BROADCAST_TIMEOUT))
        return self.strategy.experimental_local_results(total)[0].numpy()

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """The chief's ``data`` on every worker (others pass None); in 32 MiB all-reduces."""
        size = self._from_chief(np.array([len(data) if self.is_chief else 0], np.int64))[0]
        words = -(-int(size) // 4)
        buffer = np.zeros(words, np.int32)  # bytes packed 4 to an int32: sums of int32 are exact
        if self.is_chief:
            buffer.view(np.uint8)[:size] = np.frombuffer(data, np.uint8)
        for start in range(0, words, _CHUNK_WORDS):
            buffer[start:start + _CHUNK_WORDS] = self._from_chief(buffer[start:start + _CHUNK_WORDS])
        return buffer.view(np.uint8)[:size].tobytes()

    def agree(self, values: list[float]) -> list[float]:
        """The chief's numbers on every worker, so decisions made from them (best, patience) match."""
        if self.num_workers == 1:
            return list(values)
        return [float(v) for v in self._from_chief(np.asarray(values, np.float64))]

    def share_plan(self, plan: dict | None = None, arrays: dict[str, np.ndarray] | None = None):
        """The chief sends (plan, arrays); every worker returns them. Plan: JSON-able; arrays: named ndarrays.

        With one worker there is no one to tell: the arguments come back as they are.
        """
        if self.num_workers == 1:
            return plan, dict(arrays or {})
        data = None
        if self.is_chief:
            buffer = io.BytesIO()
            np.savez(buffer, **{"plan.json": np.frombuffer(json.dumps(plan).encode("utf-8"), np.uint8)},
                     **{f"array/{name}": value for name, value in (arrays or {}).items()})
            data = buffer.getvalue()
        received = self.broadcast_bytes(data)
        with np.load(io.BytesIO(received), allow_pickle=False) as archive:
            plan = json.loads(archive["plan.json"].tobytes().decode("utf-8"))
            arrays = {name[len("array/"):]: archive[name] for name in archive.files if name.startswith("array/")}
        return plan, arrays

    def make_step(self, model: keras.Model, optimizer, batch_size: int, seq_length: int) -> "ReplicatedStep":
        """The training step for this cluster (the optimizer must have been built under ``scope``)."""
        self.check_batch_size(batch_size)
        return ReplicatedStep(self, model, optimizer, batch_size, seq_length)

    def epoch_batches(self, windows, epoch: int, first_step: int, stop_step: int):
        """This worker's rows of batches ``first_step`` to ``stop_step - 1``, split among its replicas.

        Yields (x, y) distributed values: replica g gets rows [g * b, (g + 1) * b)
        of the global (B, T) batch, b = B / R.
        """
        rows = self.local_rows(windows.batch_size)
        per_replica = windows.batch_size // self.num_replicas
        first_replica = self.replica_ids[0]
        inner = windows.epoch_batches(epoch, first_step, stop_step, rows=rows)  # (L * b, T) host arrays

        def split(x, y):
            def part(ctx):
                start = (ctx.replica_id_in_sync_group - first_replica) * per_replica
                return x[start:start + per_replica], y[start:start + per_replica]

            return self.strategy.experimental_distribute_values_from_function(part)

        try:
            for x, y in inner:
                yield split(tf.convert_to_tensor(x), tf.convert_to_tensor(y))
        finally:
            inner.close()


class ReplicatedStep:
    """One optimizer step over every replica: ``step(x, y, seconds) -> (loss, the chief's seconds)``.

    ``x``, ``y`` are distributed (b, T) int32 rows; the loss returned is the
    global batch's mean, the same number on every worker. ``seconds`` (this
    worker's training time) rides in the same all-reduce as the gradients,
    and the chief's comes back: decisions taken on it (``max_time``, the
    learning-rate schedule) are the same on every worker.
    """

    def __init__(self, cluster: Cluster, model: keras.Model, optimizer, batch_size: int, seq_length: int):
        self.cluster = cluster
        self.strategy = cluster.strategy
        self.model = model
        self.optimizer = optimizer
        self.scale = 1.0 / (batch_size * seq_length)  # a replica's token sum -> its share of the global mean
        # One XLA function per replica: a function traced on one device cannot
        # read another device's variables.
        self._compiled = {}
        self._step = tf.function(self._distributed_step)

    def _loss_and_gradients(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)  # (b, T, V)
            loss = tf.reduce_sum(token_loss(y, logits)) * self.scale  # this replica's (b, T) tokens
        return loss, tape.gradient(loss, self.model.trainable_variables)

    def _replica(self, x, y, seconds):
        replica = int(tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group))
        if replica not in self._compiled:
            self._compiled[replica] = tf.function(self._loss_and_gradients, jit_compile=True)
        loss, gradients = self._compiled[replica](x, y)
        # Replica 0 runs on the chief; identity places its clock on this replica's device, like the rest.
        return [loss, tf.identity(seconds) if replica == 0 else tf.zeros_like(seconds), *gradients]

    def _distributed_step(self, x, y, seconds):
        values = self.strategy.run(self._replica, args=(x, y, seconds))
        # One batched all-reduce (sum) of the loss, the chief's clock and every gradient; each value's
        # own replicas as destinations lets TensorFlow pack them into few collectives.
        reduced = self.strategy.extended.batch_reduce_to(
            tf.distribute.ReduceOp.SUM, [(value, value) for value in values],
            options=_options(self.cluster.peer_timeout))
        loss, chief_seconds, *gradients = [self.strategy.experimental_local_results(v)[0] for v in reduced]
        # Cross-replica context: Keras skips its all-reduce and clips the global gradient.
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        return loss, chief_seconds

    def __call__(self, x, y, seconds: float) -> tuple[float, float]:
        with self.cluster.peer_errors():
            # float32 like the gradients, so all pack into the same all-reduce (a 60 ms grain at 10^6 s).
            loss, chief_seconds = self._step(x, y, tf.constant(seconds, tf.float32))
            return float(loss), float(chief_seconds)


class PrefixedStream:
    """A text stream that starts every line with ``prefix``; never a terminal, so no redrawn lines."""

    def __init__(self, stream, prefix: str):
        self.stream = stream
        self.prefix = prefix
        self._line_start = True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            self.stream.write((self.prefix if self._line_start else "") + piece)
            self._line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def describe_peer_error(exc: Exception, timeout: float) -> str:
    """A one-line reason for a TensorFlow error caused by another worker."""
    message = getattr(exc, "message", str(exc))
    peer = re.search(r"/job:(\w+)/replica:\d+/task:(\d+)", message)
    who = f"{peer.group(1)} {peer.group(2)}" if peer else "another worker"
    if "heartbeat" in message:
        return f"lost {who}: it stopped responding (crashed, killed or cut off)"
    if isinstance(exc, tf.errors.DeadlineExceededError):
        return f"no answer from the other workers within {timeout:g}s"
    if isinstance(exc, tf.errors.UnavailableError):
        return f"lost the connection to {who}"
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return f"the cluster failed: {first[:200]}"
