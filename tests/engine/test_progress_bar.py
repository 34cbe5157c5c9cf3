"""Long loops show a rich progress bar on a terminal's stderr, and nothing when stderr is not a terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

LOOP = (
    "from mal.engine.common import progress\n"
    "total = sum(sum(b) for b in progress(iter([[1, 2], [3], [4, 5, 6]]), total=6, description='labeling', size=len))\n"
    "print('items', total)\n"
)


def _run(stderr_on_terminal: bool) -> tuple[str, str]:
    """(stdout, stderr) of LOOP, with stderr on a pseudo-terminal or a pipe; stdout is always a pipe."""
    env = {k: v for k, v in os.environ.items() if k != "MAL_NO_PROGRESS"} | {"NO_COLOR": "1", "COLUMNS": "120"}
    if not stderr_on_terminal:
        done = subprocess.run([sys.executable, "-c", LOOP], capture_output=True, text=True, env=env, timeout=120)
        return done.stdout, done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    terminal, deadline = b"", time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            terminal += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    stdout = proc.communicate(timeout=60)[0].decode()
    return stdout, terminal.decode(errors="replace")


def test_the_bar_goes_to_the_terminal_and_counts_by_item_size():
    stdout, terminal = _run(stderr_on_terminal=True)
    assert stdout == "items 21\n"  # the loop's own output, untouched by the bar
    assert "labeling" in terminal and "6/6" in terminal and "boxes/s" in terminal


def test_no_bar_when_stderr_is_not_a_terminal():
    stdout, stderr = _run(stderr_on_terminal=False)
    assert stdout == "items 21\n" and stderr == ""
