"""The one progress display: a tqdm bar on a terminal, plain lines in a log.

A redirected stderr gets no carriage-return frames: a line when a tenth of the work is done
(``lines`` per run, 0 for only the final line) and one when it ends, each with the elapsed time
and the latest figures.  ``enabled=False`` (``--no-progress``, ``-q``, or a non-main process)
shows nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(self, total: int, description: str, unit: str = "it", enabled: bool = True, lines: int = 10,
                 stream: TextIO | None = None):
        self.total, self.description, self.unit = max(0, int(total)), description, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled, self.lines, self.done, self.figures = enabled, lines, 0, ""
        self.started = time.perf_counter()
        self._bar = None
        self._next_line = self._step()
        if enabled and self._is_terminal():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=description, unit=unit, file=self.stream, leave=False,
                             mininterval=0.5)

    def _is_terminal(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def _step(self) -> float:
        return self.total / self.lines if self.lines else float("inf")

    def update(self, n: int = 1, **figures: Any) -> None:
        """``n`` more units done; ``figures`` (e.g. ``psnr=31.2``) are shown with them."""
        self.done += n
        if figures:
            self.figures = ", ".join(f"{k} {_short(v)}" for k, v in figures.items())
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if figures:
                self._bar.set_postfix_str(self.figures, refresh=False)
        elif self.done >= self._next_line and self.done < self.total:
            self._line()
            self._next_line = (self.done // self._step() + 1) * self._step()

    def _line(self) -> None:
        elapsed = time.perf_counter() - self.started
        figures = f", {self.figures}" if self.figures else ""
        print(f"{self.description}: {self.done}/{self.total} {self.unit} ({elapsed:.0f} s{figures})",
              file=self.stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            self._line()
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        elif self._bar is not None:
            self._bar.close()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
