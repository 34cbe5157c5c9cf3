"""Run a command with its stdout and stderr on a pseudo-terminal, as a user at a terminal sees it (progress bars
and everything Lightning prints only to terminals)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time


def run_on_terminal(*args: str, timeout: float = 600) -> tuple[int, str]:
    """(exit code, what the terminal showed) of `python ARGS...`; MAL_NO_PROGRESS is dropped so bars show."""
    env = {k: v for k, v in os.environ.items() if k != "MAL_NO_PROGRESS"} | {"NO_COLOR": "1", "COLUMNS": "160"}
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                               env=env)
    os.close(slave)
    shown, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal (Linux reports EIO)
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        else:
            process.kill()
    finally:
        os.close(master)
    return process.wait(timeout=60), shown.decode(errors="replace")
