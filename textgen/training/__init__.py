"""Stage 4, training: the run plan, the loop, the optimizer, checkpoints, progress, and training across devices and hosts."""
