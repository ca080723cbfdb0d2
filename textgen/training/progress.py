"""A progress line for training, written to stderr.

On a terminal it redraws one line in place; in a log file or CI it writes a
plain line every ``log_interval`` seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    """Seconds as ``1h02m``, ``3m05s`` or ``42s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Reports step, loss, tokens/s and ETA; ``None`` stream silences it."""

    def __init__(self, stream=sys.stderr, redraw_interval: float = 0.25, log_interval: float = 30.0):
        self.stream = stream
        self.interactive = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.interval = redraw_interval if self.interactive else log_interval
        self._last = None  # the first update is always shown
        self._drawn = False

    def update(self, *, epoch: int, step: int, steps: int, loss: float, tokens_per_second: float,
               eta_seconds: float | None, force: bool = False) -> None:
        """Show the current state; throttled unless ``force``."""
        if self.stream is None:
            return
        now = time.monotonic()
        if not force and self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        eta = format_duration(eta_seconds) if eta_seconds is not None else "?"
        width = len(str(steps))
        filled = int(20 * step / steps) if steps else 0
        bar = "#" * filled + "." * (20 - filled)
        line = (f"epoch {epoch} [{bar}] {step:>{width}}/{steps} loss {loss:.4f} "
                f"{tokens_per_second:,.0f} tok/s ETA {eta}")
        if self.interactive:
            self.stream.write("\r" + line + "\033[K")
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """Write a whole line, ending any line being redrawn."""
        if self.stream is None:
            return
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
