"""SIGTERM (kill, a timeout, a scheduler, a launcher) stops an action the way Ctrl-C does: by raising, so the
action's own cleanup runs (its FAILURE status, the run lock) and the CLI exits 128 + the signal number."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_raises(error: Callable[[int], BaseException]) -> Iterator[None]:
    """Within the block, SIGTERM raises `error(signum)`; the previous handler comes back afterwards."""

    def stop(signum: int, frame: object) -> None:
        raise error(signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an action called from a thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
