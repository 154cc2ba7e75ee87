"""The one progress display: lines in a log, a bar only on a terminal (issue 16)."""

import io

from metacompress.progress import Progress


def test_a_log_gets_a_line_per_tenth_and_one_at_the_end_without_carriage_returns():
    log = io.StringIO()
    with Progress(100, "encoding", "tile", stream=log) as progress:
        for _ in range(100):
            progress.update(1, psnr=30.123456)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10  # 10, 20, …, 90 and the final 100/100
    assert lines[0].startswith("encoding: 10/100 tile (") and "psnr 30.12" in lines[0]
    assert lines[-1].startswith("encoding: 100/100 tile (")


def test_lines_zero_gives_only_the_final_line_and_disabled_gives_nothing():
    log = io.StringIO()
    with Progress(50, "epoch 1/3", "batch", lines=0, stream=log) as progress:
        for _ in range(50):
            progress.update(loss=0.5)
    assert log.getvalue().splitlines() == [line for line in log.getvalue().splitlines() if "50/50 batch" in line]
    assert len(log.getvalue().splitlines()) == 1
    quiet = io.StringIO()
    with Progress(50, "x", enabled=False, stream=quiet) as progress:
        progress.update(50)
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    with Progress(5, "fit", stream=tty) as progress:
        for _ in range(5):
            progress.update()
    assert "fit" in tty.getvalue() and "\r" in tty.getvalue()
