"""Files: content hashes and atomic writes (a file or directory lands whole or not at all)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import ToolkitError
from .progress import console


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def check_writable(out: str | Path) -> Path:
    """Fail early, in one line, if ``out`` cannot be created or written."""
    out = Path(out).expanduser()
    parent = out.parent if not out.exists() else out
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"output path {out} exists and is a file; choose a directory with --out")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".toolkit-write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ToolkitError(f"cannot write to {parent} ({exc.strerror or exc}); choose a writable "
                           "directory with --out") from None
    return out


REPLACE_HINT = "choose a new --out directory, or pass --force to replace it"


def check_replaceable(out: str | Path, owned: Callable[[Path], bool] | None = None,
                      force: bool = False, hint: str = REPLACE_HINT) -> Path:
    """Refuse to replace an existing, non-empty directory unless it is one of ours (``owned``)
    or the user said so (``force``): never delete what the user did not ask us to."""
    out = Path(out).expanduser()
    if out.is_dir() and not force and any(out.iterdir()) and not (owned and owned(out)):
        raise ToolkitError(f"{out} already exists and holds files this command did not write; "
                           f"{hint}")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_LOCKS: dict[str, list] = {}   # path -> [fd, depth]: re-entrant within this process


@contextlib.contextmanager
def locked(out: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on writing ``out`` (a ``.<name>.lock`` file beside it): a second
    process exporting or building into the same directory waits instead of racing. Leftovers of
    killed runs (``.<name>.partial-*``, ``.<name>.old-*``) are removed once the lock is held."""
    out = Path(out).expanduser().absolute()
    key = str(out)
    if key in _LOCKS:
        _LOCKS[key][1] += 1
        try:
            yield
        finally:
            _LOCKS[key][1] -= 1
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    fd = _acquire(path, out)
    try:
        _LOCKS[key] = [fd, 1]
        for stale in list(out.parent.glob(f".{out.name}.partial-*")) + list(
                out.parent.glob(f".{out.name}.old-*")):
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        _LOCKS.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(path)  # removed while held: nothing is left beside the output
        os.close(fd)         # releases the lock


def _acquire(path: Path, out: Path) -> int:
    """An flock'ed descriptor of ``path``, retried if the file was removed (by the holder
    releasing it) between our open and our lock — so two processes never both hold it."""
    waiting = None
    try:
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is None:
                    waiting = console.status(f"waiting for another toolkit process writing {out}")
                    waiting.start()
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)     # we locked a file that has since been unlinked: try again
    finally:
        if waiting is not None:
            waiting.stop()


@contextlib.contextmanager
def atomic_dir(out: str | Path, owned: Callable[[Path], bool] | None = None,
               force: bool = False, hint: str = REPLACE_HINT) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``out``, on error it vanishes.

    An existing ``out`` is replaced only if it is empty, ``owned(out)`` says it is one of ours,
    or ``force``; and only after the new one is complete. Writers of one ``out`` take turns
    (``locked``); the directory gets the user's umask, not ``mkdtemp``'s 0700.
    """
    check_replaceable(out, owned, force, hint)
    out = check_writable(out)
    with locked(out):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        check_replaceable(out, owned, force, hint)  # another writer may have filled it meanwhile
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file via a temporary sibling and rename (no half-written file on failure)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the user's umask decides
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
