"""Log lines for long work, so that ``--quiet`` (no progress bars) is not silent.

:class:`Heartbeat` logs one line when the work starts, one every ``every`` seconds while it
runs (only when no progress bar shows it), and one when it ends, each with what is done and,
while running, an estimate of the time left.
"""

from __future__ import annotations

import logging
import time

__all__ = ["EVERY_SECONDS", "Heartbeat"]

EVERY_SECONDS = 120.0  # "every few minutes" for long work with --quiet

log = logging.getLogger("vlda.data")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Heartbeat:
    """``what``: the work, e.g. ``"feature cache of 4000 images"``; ``total``: its units;
    ``periodic``: log every ``every`` seconds (off when a progress bar shows the work)."""

    def __init__(self, what: str, total: int, periodic: bool, every: float | None = None) -> None:
        self.what, self.total, self.periodic = what, total, periodic
        self.every = EVERY_SECONDS if every is None else every
        self.done = 0
        self._start = self._last = time.monotonic()

    def start(self, detail: str = "") -> None:
        self._start = self._last = time.monotonic()
        log.info("building the %s%s", self.what, f" ({detail})" if detail else "")

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if not self.periodic or now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self._start
        left = elapsed * (self.total - self.done) / self.done if self.done else float("nan")
        pct = 100.0 * self.done / max(self.total, 1)
        log.info(
            "building the %s: %d/%d (%.0f%%) after %s, about %s left",
            self.what, self.done, self.total, pct, _duration(elapsed), _duration(left) if self.done else "?",
        )

    def end(self, detail: str = "") -> None:
        log.info(
            "built the %s in %s%s", self.what, _duration(time.monotonic() - self._start),
            f" ({detail})" if detail else "",
        )
