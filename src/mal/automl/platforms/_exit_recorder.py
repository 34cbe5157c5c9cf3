"""`python -m mal.automl.platforms._exit_recorder EXIT_FILE -- CMD...`: run CMD, write its exit code to EXIT_FILE.

The local platform starts every job through this tiny wrapper so that a runner restarted after a crash (no
longer the job's parent, so unable to `wait()` for it) still learns how the job ended. Negative codes are
signals, as in `subprocess`. It imports nothing heavy (the standard library and its own package): it starts in
milliseconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# `python -m` imports the package first, and with it the local platform that defines the name: no cost here.
from mal.automl.platforms.local import PID_FILE


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: _exit_recorder EXIT_FILE -- CMD...", file=sys.stderr)
        return 2
    exit_file, command = argv[0], argv[2:]
    # Written first, so a runner killed between starting this wrapper and saving its pid can still find it.
    _write_atomically(os.path.join(os.path.dirname(exit_file), PID_FILE), f"{os.getpid()} {_start_ticks()}\n")
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        # The platform signals the whole process group; forwarding covers a direct signal to this wrapper too.
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    _write_atomically(exit_file, f"{code}\n")
    return code if code >= 0 else 128 - code


def _start_ticks() -> str:
    with open("/proc/self/stat", encoding="utf-8") as handle:
        stat = handle.read()
    return stat[stat.rfind(")") + 2 :].split()[19]


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
