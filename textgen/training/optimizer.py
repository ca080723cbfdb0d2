"""The optimizer every training in textgen uses, and its learning-rate schedule.

Adam with the gradient's global norm clipped, as recurrent networks need:
one exploding step would otherwise undo hours of training. Training on one
device, across devices and hosts, and the memory experiment all take it from
``make_optimizer``.
"""

from __future__ import annotations

import math

from textgen.backend import keras
from textgen.config import COSINE_FLOOR, TrainConfig


def make_optimizer(learning_rate: float, clipnorm: float) -> keras.optimizers.Optimizer:
    """Adam at ``learning_rate``, its updates made from the gradient clipped to a global norm of ``clipnorm``."""
    return keras.optimizers.Adam(learning_rate=learning_rate, global_clipnorm=clipnorm)


def scheduled_rate(config: TrainConfig, progress: float) -> float:
    """The learning rate at ``progress`` (0 to 1) of the run, under ``config.schedule``."""
    if config.schedule == "constant":
        return config.learning_rate
    progress = min(max(progress, 0.0), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.learning_rate * (COSINE_FLOOR + (1.0 - COSINE_FLOOR) * cosine)
