"""``python -m toolkit.cli``: the console script, for launchers that start a module —
``torchrun --nproc-per-node 2 -m toolkit.cli train whisper ...``."""

import sys

from . import main

sys.exit(main())
