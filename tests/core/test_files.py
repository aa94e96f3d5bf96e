"""Files: never replace what the user did not ask us to, writers of one directory take turns,
and what is written gets the user's umask."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import toolkit
from toolkit.core.errors import ToolkitError
from toolkit.core.files import atomic_dir, atomic_write_bytes, check_replaceable, locked


def test_a_directory_of_user_files_is_not_replaced(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(ToolkitError, match="--force"):
        with atomic_dir(keep) as tmp:
            (tmp / "a").write_text("x")
    assert (keep / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    with atomic_dir(keep, force=True) as tmp:       # asked for: replaced whole
        (tmp / "a").write_text("x")
    assert sorted(p.name for p in keep.iterdir()) == ["a"]


def test_owned_or_empty_directories_are_replaced(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    check_replaceable(out)                          # empty
    (out / "manifest.json").write_text("{}")
    check_replaceable(out, owned=lambda d: (d / "manifest.json").is_file())
    with pytest.raises(ToolkitError):
        check_replaceable(out)


def test_writers_take_turns_and_leftovers_of_killed_runs_go(tmp_path):
    out = tmp_path / "art"
    (tmp_path / ".art.partial-dead").mkdir()        # a killed run's leftover
    package_parent = str(Path(toolkit.__file__).resolve().parents[1])
    code = (f"import sys, time; sys.path.insert(0, {package_parent!r})\n"
            "from toolkit.core.files import locked\n"
            f"t0 = time.time()\nwith locked({str(out)!r}): print(round(time.time() - t0, 1))")
    with locked(out):
        assert not (tmp_path / ".art.partial-dead").exists()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
    waited = float(proc.communicate(timeout=60)[0].strip())
    assert waited >= 1.0                            # the other process waited for the lock
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # no lock file, no leftovers


def test_files_and_directories_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "r.json", b"{}")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert oct((tmp_path / "r.json").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "d").stat().st_mode & 0o777) == oct(0o755)


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 4096 + 17])
def test_sha256_file_hashes_window_by_window(tmp_path, monkeypatch, size):
    """The file is hashed through mappings of HASH_WINDOW bytes (resident memory stays at one
    window): the digest is the whole file's, at any size against the window."""
    import hashlib

    from toolkit.core import files

    monkeypatch.setattr(files, "HASH_WINDOW", 4096)
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert files.sha256_file(path) == hashlib.sha256(data).hexdigest()
