"""Progress display that suits where stderr goes.

On a terminal: a tqdm bar. Anywhere else (CI, a log file, a notebook, a pipe) a bar's carriage-return
redraws pile up in one unreadable line, so a few plain lines are printed instead: one each time another
tenth of the task is done, and the last state when it closes. Nothing at all when ``enabled`` is False.

    bar = progress_bar(total=60, unit="epoch", desc="train-decoder", enabled=progress)
    for epoch in range(60):
        ...
        bar.update(1)
        bar.set_postfix_str(f"val_mse {mse:.4f}")
    bar.close()
"""
from __future__ import annotations

import sys
import time

__all__ = ["progress_bar"]

PLAIN_LINES = 10  # lines over the whole task off a terminal (plus the last one at close)


def progress_bar(total: int | None, unit: str = "it", desc: str | None = None, initial: int = 0,
                 enabled: bool = True):
    """An object with ``update(n)``, ``set_postfix_str(text)``, ``close()`` and ``n`` (done so far).

    A tqdm bar when stderr is a terminal, plain lines on stderr otherwise, nothing when not ``enabled``.
    It is also a context manager (closed on exit).
    """
    if not enabled:
        return _Silent(initial)
    stream = sys.stderr
    if _is_tty(stream):
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is a dependency; a stripped environment still gets the plain lines
            pass
        else:
            return tqdm(total=total, unit=unit, desc=desc, initial=initial, file=stream, dynamic_ncols=True)
    return _Lines(total, unit, desc, initial, stream)


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False


class _Silent:
    def __init__(self, initial: int = 0):
        self.n = initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Lines(_Silent):
    """Plain lines, at most PLAIN_LINES while running plus one at close, never a carriage return."""

    def __init__(self, total, unit, desc, initial, stream):
        super().__init__(initial)
        self.initial = initial  # closed where it began (an error before any step): nothing to say
        self.total = int(total) if total else None
        self.unit, self.desc, self.stream = unit, desc or "progress", stream
        self.postfix = ""
        self.t0 = time.monotonic()
        self._printed_at = None  # n of the last line printed
        self._closed = False
        self._due = False
        # a resumed task starts past some steps: count the tenths from where it is now
        self._step = max(1, -(-(self.total - initial) // PLAIN_LINES)) if self.total else None
        self._next = initial + self._step if self._step else None

    def update(self, n: int = 1) -> None:
        if self._due:  # a tenth was reached and no postfix came after it: print it now
            self._line()
        self.n += n
        if self._next is not None and self.n >= self._next and self.n < self.total:
            # Printed at the next set_postfix_str (callers update, then describe the new state) or update.
            self._due = True
            while self._next <= self.n:
                self._next += self._step

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = str(text)
        if self._due:
            self._line()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._printed_at != self.n and (self.n != self.initial or self._printed_at is not None):
            self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self.t0
        done = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            done += f" ({100 * self.n / self.total:.0f}%)"
        text = f"{self.desc}: {done}, {elapsed:.0f} s" + (f", {self.postfix}" if self.postfix else "")
        print(" ".join(text.split()), file=self.stream, flush=True)  # one line, whatever the postfix holds
        self._printed_at = self.n
        self._due = False
