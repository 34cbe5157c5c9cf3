"""The local platform's job wrapper adds nothing to a job's stderr (issue #20): `python -m` on a module that its own
package imports makes runpy warn "found in sys.modules" at the top of every trial's stderr.log."""

from __future__ import annotations

import subprocess
import sys

from mal.automl.platforms.local import PID_FILE


def test_the_wrapper_runs_its_command_silently_and_records_the_exit_code(tmp_path):
    exit_file = tmp_path / "exit_code"
    done = subprocess.run(
        [sys.executable, "-W", "default", "-m", "mal.automl.platforms._exit_recorder", str(exit_file), "--",
         sys.executable, "-c", "raise SystemExit(3)"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.stderr == "" and done.returncode == 3
    assert exit_file.read_text() == "3\n" and (tmp_path / PID_FILE).is_file()
