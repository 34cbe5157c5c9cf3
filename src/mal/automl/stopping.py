"""SIGTERM stops a study the way Ctrl-C does.

`kill PID`, `timeout`, systemd, Docker and Kubernetes stop a process with SIGTERM. By default Python dies on it at
once, leaving the trainings it started running unwatched in their own sessions. Inside `sigterm_as_interrupt()`
SIGTERM raises `TerminatedError`, a KeyboardInterrupt, so the code that stops running trainings on Ctrl-C runs
for it too and nothing that catches Exception swallows it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TerminatedError(KeyboardInterrupt):
    """SIGTERM reached the process: stop like Ctrl-C."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises TerminatedError inside the block (only the main thread can set signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: object) -> None:
    raise TerminatedError(f"signal {signum}")
