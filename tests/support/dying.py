"""A bench spec whose ort fp16 case kills its own process, as the OOM killer would."""

import os
import signal

from toolkit.bench.svt import SVTBench


class DyingSVTBench(SVTBench):
    def open(self, case):
        if case.backend == "ort" and case.precision == "fp16":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().open(case)


class DyingReferenceBench(SVTBench):
    def open(self, case):
        if case.backend == "torch":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().open(case)


DYING_SVT = DyingSVTBench()
DYING_REFERENCE = DyingReferenceBench()
