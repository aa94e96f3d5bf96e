"""The consoles and the one-line error of every command."""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console
from rich.markup import escape

from ..core.errors import ToolkitError
from ..core.files import full_disk_reason

out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)


def error_line(message: str) -> None:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)


def one_line_errors(fn):
    """Turn user errors into one line + non-zero exit (and Ctrl-C into "interrupted", 130)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ToolkitError as exc:
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:   # a write the file system refused (room, size, quota)
            reason = full_disk_reason(exc)
            if reason is None:
                raise
            where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            error_line(f"cannot write{where}: {reason[0]}; {reason[1]}, and run again")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


