"""Files: content hashes and atomic writes (a file or directory lands whole or not at all)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from rich.markup import escape

from .errors import ToolkitError
from .progress import console

# mapped and hashed this much at a time: a whole-file mapping counts every page read as the
# process's resident memory until it is unmapped (hashing the InternVL2-2B decoder's 6.7 GB
# data file was its int8 export's peak, 16.25 GB against 13.85 GB for any other step)
HASH_WINDOW = 64 << 20


def sha256_file(path: str | Path) -> str:
    """The file's sha256, hashed from read-only mappings of ``HASH_WINDOW`` bytes each (no copy
    through Python buffers: an artifact's graphs are hashed each time one is opened; windows:
    resident memory stays at one window, whatever the file's size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for offset in range(0, size, HASH_WINDOW):
            with mmap.mmap(f.fileno(), min(HASH_WINDOW, size - offset), access=mmap.ACCESS_READ,
                           offset=offset) as view:
                h.update(view)
    return h.hexdigest()


def weights_hash(directory: str | Path) -> str | None:
    """sha256 over a checkpoint directory's weight files (``*.safetensors``, ``*.bin``), names
    and contents: what identifies the checkpoint's numbers in a cached export's manifest."""
    files = sorted(p for p in Path(directory).iterdir()
                   if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def check_writable(out: str | Path, option: str = "--out") -> Path:
    """Fail early, in one line, if ``out`` cannot be created or written (its parent too: the
    replacement and the lock file are made beside it). ``option``: the flag the fix names."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"output path {out} is {describe(out)}, not a directory; choose a "
                           f"directory with {option}")
    for where in ([out.parent, out] if out.exists() else [out.parent]):
        try:
            where.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".toolkit-write-test-", dir=where)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ToolkitError(f"cannot write to {where} ({exc.strerror or exc}); choose a "
                               f"writable directory with {option}") from None
    return out


REPLACE_HINT = "choose a new --out directory, or pass --force to replace it"


def protected_dirs() -> list[Path]:
    """The directories no command may replace or delete: the home and the working directory
    (after resolving symbolic links)."""
    return [Path.home().resolve(), Path.cwd().resolve()]


def check_not_protected(out: str | Path, option: str = "--out") -> None:
    """Refuse an output directory that is, or contains, the home or the working directory —
    replacing it would delete them — whatever ``--force`` says. Symbolic links are resolved
    first, so a link to ``$HOME``'s parent is caught too."""
    real = Path(out).expanduser().resolve()
    for keep in protected_dirs():
        if keep == real or real in keep.parents:
            what = "home" if keep == Path.home().resolve() else "working"
            raise ToolkitError(f"{option} {out} is or contains the {what} directory ({keep}); "
                               f"no command replaces that, --force or not — choose a new "
                               f"{option} directory")


def check_replaceable(out: str | Path, owned: Callable[[Path], bool] | None = None,
                      force: bool = False, hint: str = REPLACE_HINT) -> Path:
    """Refuse to replace an existing, non-empty directory unless it is one of ours (``owned``)
    or the user said so (``force``): never delete what the user did not ask us to. Never,
    ``force`` or not, a directory that is or contains the working or the home directory."""
    out = Path(out).expanduser()
    check_not_protected(out)
    if not out.is_dir() or not any(out.iterdir()):
        return out
    if not force and not (owned and owned(out)):
        raise ToolkitError(f"{out} already exists and holds files this command did not write; "
                           f"{hint}")
    return out


def _read_umask() -> int:
    mask = os.umask(0)   # at import, before any thread could create a file meanwhile
    os.umask(mask)
    return mask


_UMASK = _read_umask()
_GUARD = threading.Lock()
_LOCKS: dict[str, list] = {}   # resolved path -> [RLock, flock fd or None, depth]


@contextlib.contextmanager
def locked(out: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on writing ``out`` (a ``.<name>.lock`` file beside it, removed on
    release): another process — or thread — writing the same directory waits instead of racing.
    Re-entrant in the thread that holds it. Leftovers of killed runs (``.<name>.partial-*``,
    ``.<name>.old-*``) are removed once the lock is first taken."""
    out = Path(out).expanduser().resolve()
    key = str(out)
    with _GUARD:
        entry = _LOCKS.setdefault(key, [threading.RLock(), None, 0])
    entry[0].acquire()
    try:
        if entry[2] == 0:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                entry[1] = _acquire(out.parent / f".{out.name}.lock", out)
            except OSError as exc:
                raise ToolkitError(f"cannot write to {out.parent} ({exc.strerror or exc}); "
                                   "choose a writable directory with --out") from None
            for stale in list(out.parent.glob(f".{out.name}.partial-*")) + list(
                    out.parent.glob(f".{out.name}.old-*")):
                shutil.rmtree(stale, ignore_errors=True)
        entry[2] += 1
        try:
            yield
        finally:
            entry[2] -= 1
            if entry[2] == 0:
                with contextlib.suppress(OSError):
                    os.unlink(out.parent / f".{out.name}.lock")  # removed while still held
                os.close(entry[1])                                # releases the lock
                entry[1] = None
    finally:
        entry[0].release()


def _acquire(path: Path, out: Path) -> int:
    """An flock'ed descriptor of ``path``, retried if the file was removed (by the holder
    releasing it) between our open and our lock — so two processes never both hold it."""
    said = False
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:  # a plain line: a live status could clash with a progress bar
                console.print(f"waiting for another toolkit process writing {escape(str(out))}")
                said = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # we locked a file that has since been unlinked: try again


_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
         errno.EFBIG: "a file grew past this process's file-size limit"}
_FULL_FIX = {errno.ENOSPC: "free space there (or choose another --out)",
             errno.EDQUOT: "free space within your quota (or choose another --out)",
             errno.EFBIG: "raise the limit (ulimit -f) or use a file system that allows larger "
                          "files"}
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


def full_disk_reason(exc: BaseException) -> tuple[str, str] | None:
    """(why, fix) if a write failed for lack of room (an OSError's errno, or the message a C++
    writer — PyTorch's exporter, onnxruntime — passes up)."""
    code = exc.errno if isinstance(exc, OSError) and exc.errno in _FULL else None
    if code is None:
        text = str(exc)
        code = next((c for c, t in zip(_FULL, _FULL_TEXT) if t in text), None)
    return None if code is None else (_FULL[code], _FULL_FIX[code])


@contextlib.contextmanager
def write_errors(where: str | Path) -> Iterator[None]:
    """Turn a write that ran out of room into one line that names the place and the fix."""
    try:
        yield
    except ToolkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - only room errors are translated
        reason = full_disk_reason(exc)
        if reason is None:
            raise
        raise ToolkitError(f"cannot write {where}: {reason[0]}; {reason[1]}, and run again — "
                           "nothing was written") from None


@contextlib.contextmanager
def atomic_dir(out: str | Path, owned: Callable[[Path], bool] | None = None,
               force: bool = False, hint: str = REPLACE_HINT) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``out``, on error it vanishes.

    An existing ``out`` is replaced only if it is empty, ``owned(out)`` says it is one of ours,
    or ``force``; and only after the new one is complete. If the swap fails, the old ``out`` is
    put back. Writers of one ``out`` take turns (``locked``); the directory gets the user's
    umask, not ``mkdtemp``'s 0700. A symbolic link ``out`` is followed (its target is replaced).
    """
    check_replaceable(out, owned, force, hint)
    out = check_writable(out).resolve()
    with locked(out):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
        old = None
        try:
            with write_errors(out):
                yield tmp
            check_replaceable(out, owned, force, hint)  # another writer may have filled it
            if out.exists():
                old = out.parent / f".{out.name}.old-{os.getpid()}"
                os.replace(out, old)
            os.replace(tmp, out)
        except BaseException:
            if old is not None and not out.exists():
                os.replace(old, out)  # put the user's previous directory back
                old = None
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def describe(path: str | Path) -> str:
    """What is at ``path``, in words: "a directory", "a FIFO", "a symbolic link loop", …"""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ("a symbolic link to a missing file" if os.path.islink(path)
                else "nothing (it does not exist)")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"unreadable ({exc.strerror})"
    mode = st.st_mode
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "a regular file"


def check_input_file(path: str | Path, what: str) -> Path:
    """A file a command reads: a regular file (a symbolic link to one is fine), else one line
    saying what is there instead."""
    path = Path(path)
    if not path.is_file():
        what_is = describe(path)
        if what_is.startswith("nothing"):
            raise ToolkitError(f"{what} {path} does not exist")
        raise ToolkitError(f"{what} {path} is {what_is}, not a file; give the path of a {what}")
    return path


def name_max(directory: str | Path) -> int:
    """The longest file name the file system of ``directory`` allows (255 on most)."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """A file a command will write, checked before any work: an existing *regular* file of that
    name is replaced (atomically, as openai-whisper's CLI replaces its outputs); a symbolic link,
    directory, FIFO or device there is refused, and so is a name longer than the file system
    allows."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ToolkitError(f"{path} is {'a symbolic link' if path.is_symlink() else describe(path)}"
                           f"; a command replaces only a regular file — remove it or choose "
                           f"another {option}")
    parent = path.parent if path.parent.exists() else Path(".")
    limit = name_max(parent)
    if len(path.name.encode()) > limit:
        raise ToolkitError(f"the output name {path.name[:40]}… is {len(path.name.encode())} bytes; "
                           f"the file system allows {limit} — rename the input or choose a "
                           f"shorter {option}")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file via a temporary sibling and rename (no half-written file on failure). Only
    a regular file is replaced (see ``check_output_file``); the temporary name is short, so any
    name the file system allows can be written."""
    path = Path(path)
    check_output_file(path)
    with write_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:32]}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the user's umask decides
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
