"""Running the console script as a user does, and the one check every bad input must pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("toolkit")


def run_toolkit(*args, cwd=None, env=None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``toolkit ARGS`` in a fresh process (the installed console script)."""
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "toolkit.cli"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def fails_cleanly(*args, contains: str, cwd=None, env=None) -> str:
    """The command exits 2 with one ``error:`` line naming the problem, no traceback, nothing on
    stdout. Returns the error line."""
    r = run_toolkit(*args, cwd=cwd, env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert contains in errors[0], errors[0]
    assert r.stdout.strip() == "", r.stdout
    return errors[0]
