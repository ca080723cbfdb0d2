"""TensorBoard event files for a training run: its losses, learning rate and throughput against steps.

Scalars are written by a ``tf.summary`` file writer to one folder, at the run's global
step (optimizer steps over all its sessions). A run resumed after a crash
repeats the steps between its checkpoint and the crash; so that those steps
are not shown twice, every session first writes a restart marker (a
``SessionLog.START`` event at the step it starts from), after which
TensorBoard drops whatever an earlier session wrote from that step on.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from textgen.backend import tf
from textgen.errors import TrainingError

# The tags written, one per quantity.
TRAIN_LOSS = "loss/train"
VAL_LOSS = "loss/validation"
LEARNING_RATE = "learning_rate"
TOKENS_PER_SECOND = "tokens_per_second"


class EventWriter:
    """Writes a run's scalars as TensorBoard events in ``folder``, from step ``first_step`` on."""

    def __init__(self, folder, first_step: int):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_restart(self.folder, first_step)
            self._writer = tf.summary.create_file_writer(str(self.folder))
        except (OSError, tf.errors.OpError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "message", None) or str(exc)
            raise TrainingError(f"cannot write TensorBoard events there: {reason}. "
                                f"Received: tensorboard='{folder}'") from None

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """Record each value (None: skipped) under its tag at ``step``, and flush them to disk.

        Written as plain scalar values (``simple_value``), which every
        TensorBoard reader takes as scalars, and which its event accumulator
        drops on a restart marker.
        """
        summary = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag=tag, simple_value=float(value))
                                              for tag, value in values.items() if value is not None])
        with self._writer.as_default():
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _write_restart(folder: Path, step: int) -> None:
    """Write a file holding one ``SessionLog.START`` event at ``step``.

    TensorBoard reads a folder's event files in the order of their names, and
    ``tf.summary`` names its file ``events.out.tfevents.<seconds>.<host>.<pid>...``.
    This file's name has ``0`` in place of a process id, which never starts
    with 0: it sorts before the file this session's writer opens next, and
    (waiting for the next second if need be) after every file already there.
    """
    host = socket.gethostname()
    while True:
        name = f"events.out.tfevents.{int(time.time())}.{host}.0.restart-{step}"
        if all(existing.name < name for existing in folder.iterdir()):
            break
        time.sleep(0.05)
    version = tf.compat.v1.Event(wall_time=time.time(), file_version="brain.Event:2")
    start = tf.compat.v1.Event(wall_time=time.time(), step=step,
                               session_log=tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.START))
    with tf.io.TFRecordWriter(os.fspath(folder / name)) as records:
        records.write(version.SerializeToString())
        records.write(start.SerializeToString())
