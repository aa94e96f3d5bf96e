"""The ``toolkit`` command line: thin Typer commands over the package.

- ``base.py``: the apps, consoles, one-line errors, the options every command shares;
- ``options.py``: options generated from the library's dataclasses, numbers checked as parsed;
- ``common.py`` (doctor, export, bench), ``tensorrt.py`` (build, check-trt), ``serving.py``
  (serve, load-test, export-triton): the commands every family shares;
- ``train.py``: ``toolkit train <family>``, one command per family that trains, generated from
  its ``TrainOptions`` when it is asked for;
- ``<family>.py``: a family's own commands (``transcribe``, ``synthesize``, ``embed``),
  registered through the family's registry entry.

Every ``ToolkitError`` — and every usage error of the parser (a bad number, an unknown option,
a missing argument) — becomes one ``error:`` line on stderr and exit code 2, never a traceback
or a box.
"""

from __future__ import annotations

import sys

import typer

from ..core.errors import ToolkitError
from . import common  # noqa: F401  (its commands register on import)
from .base import app, err, error_line
from .lazy import click_exceptions


def main(argv: list[str] | None = None) -> int:
    """The console script: Typer's app, with the parser's errors as one line."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="toolkit", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        return 2
    except click_exceptions.UsageError as exc:
        ctx = exc.ctx
        where = ctx.command_path if ctx is not None else "toolkit"
        error_line(f"{_usage_message(exc)} (see `{where} --help`)")
        return 2
    except ToolkitError as exc:        # a lazy command that cannot load (a missing extra)
        error_line(str(exc))
        return exc.exit_code
    except typer.Abort:
        err.print("[red]interrupted[/]")
        return 130
    except click_exceptions.ClickException as exc:
        error_line(exc.format_message())
        return exc.exit_code
    return code if isinstance(code, int) else 0     # a command's typer.Exit(code)


def _usage_message(exc: click_exceptions.UsageError) -> str:
    if isinstance(exc, click_exceptions.MissingParameter) and exc.param is not None:
        what = "argument" if exc.param.param_type_name == "argument" else "option"
        name = (exc.param.opts[0] if what == "option" else
                (exc.param.name or "").upper())
        return f"missing {what} {name}"
    return " ".join(exc.format_message().split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
