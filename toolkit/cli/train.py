"""``toolkit train <family>``: one command per family that trains, built from the family's
``TrainOptions`` (its options, help and ranges) when it is asked for — so ``toolkit --help``
imports no training code (PyTorch)."""

from __future__ import annotations

from .. import registry
from .errors import one_line_errors
from .lazy import LazyGroup, single_command
from .options import with_options


def train_command(family):
    own = getattr(family.cli_module, "train_command", None) if family.cli else None
    if own is not None:                 # a family whose training takes options of its own
        return single_command(family.name, own, help=_summary(family))
    module = family.train_module

    @one_line_errors
    @with_options(opts=module.TrainOptions)
    def command(*, opts):
        module.train(opts)

    return single_command(family.name, command, help=_summary(family))


def _summary(family) -> str:
    return f"Train {family.summary} on local data."


class TrainGroup(LazyGroup):
    """A command per family with a ``train`` entry, unless the family registers its own."""

    def lazy(self):
        return {name: (lambda f=fam: train_command(f), _summary(fam))
                for name, fam in registry.FAMILIES.items() if fam.train}
