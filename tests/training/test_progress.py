import io

import pytest

from textgen.cli.options import Duration
from textgen.training.progress import Progress, format_duration


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (185, "3m05s"), (3720, "1h02m")])
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("1.5h", 5400), (" 2m ", 120)])
def test_duration_option_accepts_units(text, seconds):
    assert Duration().convert(text, None, None) == seconds


def test_progress_in_a_log_writes_whole_lines_with_rate_and_eta():
    stream = io.StringIO()
    progress = Progress(stream=stream, log_interval=0)
    progress.update(epoch=1, step=5, steps=10, loss=2.5, tokens_per_second=12345, eta_seconds=65)
    progress.message("epoch 1: val loss 2.0")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "epoch 1 [##########..........]  5/10 loss 2.5000 12,345 tok/s ETA 1m05s"
    assert lines[1] == "epoch 1: val loss 2.0"


def test_progress_is_throttled_and_can_be_silenced():
    stream = io.StringIO()
    progress = Progress(stream=stream, log_interval=3600)
    for step in range(100):
        progress.update(epoch=1, step=step, steps=100, loss=1.0, tokens_per_second=1, eta_seconds=None)
    assert len(stream.getvalue().splitlines()) == 1
    Progress(stream=None).update(epoch=1, step=1, steps=1, loss=1.0, tokens_per_second=1, eta_seconds=None)
