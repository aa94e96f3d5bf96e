"""A benchmark case whose process dies is reported, and the bench goes on with the others."""

import dataclasses
import json
import signal

import pytest

from toolkit import registry
from toolkit.bench.harness import BenchOptions, run_bench
from toolkit.bench.isolate import CaseFailed, run_isolated
from toolkit.core.errors import ToolkitError

# the SVT family with a bench spec whose cases kill their own process (tests/support/dying.py)
DYING_SVT = dataclasses.replace(registry.get("svt"), bench="support.dying:DYING_SVT")
DYING_REFERENCE = dataclasses.replace(registry.get("svt"), bench="support.dying:DYING_REFERENCE")


def _die():
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_run_isolated_reports_a_killed_child_instead_of_hanging():
    def hung(*_):
        raise AssertionError("run_isolated waited forever on a dead child")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        with pytest.raises(CaseFailed, match=r"case died \(signal 9, SIGKILL\)"):
            run_isolated(_die)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.slow
def test_bench_finishes_and_records_the_dead_case(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("TOOLKIT_THREADS", "1")
    out = tmp_path / "b.json"
    with pytest.raises(ToolkitError, match=r"1 case\(s\) failed \(ort fp16: case died"):
        run_bench(DYING_SVT, BenchOptions(
            preset="tiny", backends=["torch", "ort"], precisions=["fp32", "fp16"], runs=1,
            warmup=0, limit=3, out=out, workdir=tmp_path / "w",
            family_options={"frames": ["2"], "size": ["32"]}))
    records = json.loads(out.read_text())   # written before the failure is reported
    by = {(r["backend"], r["precision"]): r for r in records}
    assert set(by) == {("torch", "fp32"), ("ort", "fp32"), ("ort", "fp16")}
    dead = by[("ort", "fp16")]
    assert dead["error"].startswith("case died (signal 9") and dead["latency_ms_p50"] is None
    assert by[("ort", "fp32")]["error"] is None and by[("ort", "fp32")]["latency_ms_p50"] > 0
    assert len(records) == 3


def test_a_dead_reference_stops_the_bench_in_one_line(tmp_path, shared_data):
    with pytest.raises(ToolkitError, match=r"the reference case \(torch fp32\) failed.*signal 9"):
        run_bench(DYING_REFERENCE, BenchOptions(
            preset="tiny", backends=["torch"], precisions=["fp32"], runs=1, warmup=0, limit=3,
            out=tmp_path / "b.json", workdir=tmp_path / "w",
            family_options={"frames": ["2"], "size": ["32"]}))
    assert not (tmp_path / "b.json").exists()
