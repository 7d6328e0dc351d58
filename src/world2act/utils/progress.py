"""Progress bars that suit both a terminal and a log file: :func:`progress_bar`.

On a terminal a progress bar redraws itself in place with carriage returns, ten times a second.
Written to a file (``world2act ... 2> train.log``, a cluster job's output, ``nohup``), each redraw
becomes one more ``\\r``-separated update: thousands per run, one unreadable line. So every bar in
world2act comes from :func:`progress_bar`, which returns

* on a terminal (the bar's ``file``, by default ``sys.stderr``, says ``isatty()``): a plain
  :class:`tqdm.tqdm`, exactly as ``tqdm(iterable, **kwargs)``;
* otherwise: a :class:`tqdm.tqdm` subclass that writes one ``\\n``-terminated ASCII line
  (``desc:  45%|####5     | 450/1000 [00:10<00:12, 45.0step/s, loss=0.1]``) when the bar
  starts, each time it advanced by ``every_pct`` percent of ``total`` (default 5: about 20
  lines per bar), at least every ``every_s`` seconds while it advances (default 60; the only
  rule when ``total`` is unknown), and once when it closes, whether or not ``leave`` is set.
  No ``\\r`` and no cursor movement reach the file.

Everything else is tqdm's: ``desc``, ``total``, ``initial``, ``unit``, ``disable``, ``leave``,
``update``, ``set_postfix`` / ``set_description`` (shown in the next line written), ``close`` and
use as an iterator or a context manager.
"""
from __future__ import annotations

import re
import sys
from typing import Any, Iterable

from tqdm import tqdm

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _is_terminal(file) -> bool:
    try:
        return bool(file.isatty())
    except Exception:  # no isatty, or a closed file
        return False


class _LineWriter:
    """File wrapper that passes on text as whole lines: ``\\r`` and ANSI cursor moves become line
    breaks, blank segments (tqdm clearing its bar) are dropped, every line ends with ``\\n``."""

    def __init__(self, file):
        self._file = file

    def write(self, s: str) -> None:
        for part in re.split(r"[\r\n]", _ANSI.sub("\n", s)):
            if part.strip():
                self._file.write(part.rstrip() + "\n")

    def flush(self) -> None:
        flush = getattr(self._file, "flush", None)
        if flush is not None:
            flush()


class _LogTqdm(tqdm):
    """tqdm that writes a plain line every ``every_pct`` % / ``every_s`` s (see the module doc)."""

    def __init__(self, *args, every_pct: float = 5.0, every_s: float = 60.0, **kwargs):
        self._every_pct, self._every_s = float(every_pct), float(every_s)
        self._line_n: float | None = None  # n and time of the last line written
        self._line_t = 0.0
        self._closing = False
        super().__init__(*args, **kwargs)

    def _due(self) -> bool:
        n = self.n
        if self._line_n is None:
            return True
        if n == self._line_n:
            return False
        if self._closing:
            return True
        if self.total and (n >= self.total or (n - self._line_n) * 100.0 >= self._every_pct * self.total):
            return True
        return self._time() - self._line_t >= self._every_s

    def display(self, msg=None, pos=None):
        # msg is None: a refresh; msg == "": tqdm clearing the bar (on close with leave=False)
        if (msg is None or (msg == "" and self._closing)) and self._due():
            self._line_n, self._line_t = self.n, self._time()
            self.fp.write(self.__str__() + "\n")
            self.fp.flush()
        return True

    def close(self):
        if not getattr(self, "disable", True):
            self._closing = True  # the final line is written whatever the rate rules say
        super().close()


def progress_bar(iterable: Iterable | None = None, *, every_pct: float = 5.0, every_s: float = 60.0,
                 **kwargs: Any) -> tqdm:
    """A :class:`tqdm.tqdm` bar for a terminal, plain periodic lines for a log file.

    Args:
        iterable: what to wrap, as for ``tqdm`` (None: drive the bar with ``update``).
        every_pct: off a terminal, write a line each time the bar advanced by this percentage
            of ``total`` (default 5).
        every_s: off a terminal, write a line at least this often while the bar advances
            (default 60 s; the only rule when ``total`` is unknown).
        **kwargs: any ``tqdm`` option (``desc``, ``total``, ``initial``, ``unit``, ``disable``,
            ``leave``, ``file`` …). Off a terminal ``ascii=True`` is the default and
            ``dynamic_ncols`` is ignored.

    Returns:
        ``tqdm(iterable, **kwargs)`` when the bar's ``file`` (default ``sys.stderr``) is a
        terminal, otherwise a ``tqdm`` subclass writing ``\\n``-terminated lines (module doc).
    """
    file = kwargs.get("file") or sys.stderr
    if _is_terminal(file):
        return tqdm(iterable, **kwargs)
    kwargs["file"] = _LineWriter(file)
    kwargs.pop("dynamic_ncols", None)
    kwargs.setdefault("ascii", True)
    return _LogTqdm(iterable, every_pct=every_pct, every_s=every_s, **kwargs)


__all__ = ["progress_bar"]
