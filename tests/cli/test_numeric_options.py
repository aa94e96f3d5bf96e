"""Every numeric option of every command, driven with 0, -1, NaN, inf, 1e309 and a 20-digit
integer: each value is either accepted (finite and in range) or refused by the parser in one
line naming the option — before any command runs. (The one-line rendering through the console
script is checked in test_hostile.py.)"""

import math
import typing

import pytest
import typer

from toolkit.cli import app
from toolkit.cli.lazy import click_exceptions
from toolkit.cli.options import NumberParser

VALUES = ["0", "-1", "nan", "inf", "1e309", "12345678901234567890"]


def _leaves(group, ctx, path=()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        cmd = cmd.real() if hasattr(cmd, "real") else cmd
        if hasattr(cmd, "list_commands"):
            yield from _leaves(cmd, ctx, path + (name,))
        else:
            yield path + (name,), cmd


ROOT = typer.main.get_command(app)
COMMANDS = dict(_leaves(ROOT, ROOT.make_context("toolkit", ["doctor"])))


def _numeric(param) -> bool:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    args = typing.get_args(annotation) or (annotation,)
    return any(a in (int, float) for a in args) and not getattr(param, "is_flag", False)


def _required(cmd) -> list[str]:
    """Dummy values for the command's required arguments and options."""
    out = []
    for p in cmd.params:
        if not p.required:
            continue
        out += ["x"] if not getattr(p, "opts", [""])[0].startswith("-") else [p.opts[0], "x"]
    return out


CASES = [(" ".join(path), p.opts[0]) for path, cmd in COMMANDS.items() for p in cmd.params
         if _numeric(p)]


def test_every_command_and_numeric_option_is_covered():
    names = {" ".join(p) for p in COMMANDS}
    assert {"transcribe", "serve", "bench", "export", "build", "train whisper", "train gradtts",
            "train svt", "synthesize", "embed", "load-test", "export-triton"} <= names
    assert len(CASES) > 60
    for path, cmd in COMMANDS.items():
        for p in cmd.params:
            if _numeric(p):   # parsed by the one checker: finite, in range, bounded
                assert isinstance(p.type_descriptor.parameter_info.parser, NumberParser), \
                    (path, p.opts)


@pytest.mark.parametrize("command, flag", CASES)
def test_numbers_are_accepted_or_refused_in_one_line(command, flag):
    cmd = COMMANDS[tuple(command.split())]
    parser = next(p for p in cmd.params if p.opts[0] == flag).type_descriptor.parameter_info.parser
    for value in VALUES:
        try:
            ctx = cmd.make_context(command, _required(cmd) + [flag, value])
        except click_exceptions.UsageError as exc:
            message = exc.format_message()
            assert "\n" not in message and message.startswith(flag), (flag, value, message)
            continue
        got = ctx.params[next(p.name for p in cmd.params if p.opts[0] == flag)]
        assert isinstance(got, (int, float)) and math.isfinite(got), (flag, value, got)
        assert parser.low is None or got >= parser.low
        assert parser.high is not None and got <= parser.high     # every number is bounded
