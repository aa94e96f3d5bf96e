"""`toolkit train whisper` at scale, on this CPU: two processes under `torchrun` (gloo) repeat
one process with the same global batch, and a run killed with SIGKILL mid-epoch resumes to
the losses of an uninterrupted one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from support.cli import run_toolkit

TORCHRUN = Path(sys.executable).with_name("torchrun")
# 1 vs 2 processes: the same clips and the same loss definition, but the matrix products of a
# batch of 2 and of two batches of 1 round differently (float32). Measured on this CPU: the
# logged losses (5 decimals) equal, the weights within 1.4e-5 after 6 AdamW steps at lr 1e-3;
# the test allows 1e-4 on both
LOSS_RTOL, WEIGHT_ATOL = 1e-4, 1e-4
# each test trains twice (and evaluates a random-weight model, 224 tokens a clip): 2-5 min on
# the 2-core CI machine, so they are marked slow


@pytest.fixture(scope="module")
def lj_broken(shared_data, tmp_path_factory):
    """Four LJ clips and an unreadable one to train on, two LJ clips held out."""
    lj = shared_data / "ljspeech-mini"
    d = tmp_path_factory.mktemp("lj-broken")
    (d / "wavs").mkdir()
    rows = (lj / "metadata.csv").read_text().splitlines()[:6]
    for r in rows:
        shutil.copy(lj / "wavs" / f"{r.split('|')[0]}.wav", d / "wavs")
    (d / "wavs" / "broken.wav").write_bytes(b"RIFF not really a wav")
    rows.insert(2, "broken|a broken file|a broken file")
    (d / "metadata.csv").write_text("\n".join(rows) + "\n")
    return d


def _args(data, out, *more):
    return ["train", "whisper", "--preset", "tiny", "--data", data, "--eval-split", "2",
            "--language", "en", "--lr", "1e-3", "--warmup", "0", "--out", out, *more]


def _log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _losses(out):
    return {e["step"]: e["loss"] for e in _log(out) if "loss" in e}


def _weights(out):
    return torch.load(out / "resume" / "state.pt", weights_only=True)["model"]


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside python")
def test_two_processes_repeat_one_process(lj_broken, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--steps", "6", "--eval-every", "6", "--workers", "1"]
    r = run_toolkit(*_args(lj_broken, one, "--batch-size", "2", *common))
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "TOOLKIT_THREADS": "1"}
    r2 = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m",
                         "toolkit.cli", *map(str, _args(lj_broken, two, "--batch-size", "1",
                                                        *common))],
                        capture_output=True, text=True, env=env, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "2 processes (gloo)" in r2.stderr
    a, b = _losses(one), _losses(two)
    assert list(a) == list(b) == list(range(1, 7))
    np.testing.assert_allclose([b[s] for s in b], [a[s] for s in a], rtol=LOSS_RTOL)
    # steps 1 and 5 hold only the broken clip (no tokens: loss 0); the others learn
    assert a[1] == a[5] == 0 and a[4] < 0.9 * a[2]
    wa, wb = _weights(one), _weights(two)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < WEIGHT_ATOL
    # 5 training clips in global batches of 2: 3 per epoch, the broken one skipped each epoch
    # (with 2 processes one part of the last batch of an epoch is empty: a zero-weight step)
    for r_, out in ((r, one), (r2, two)):
        ends = [e["epoch_end"] for e in _log(out) if "epoch_end" in e]
        assert [(e["epoch"], e["clips"], e["unreadable"]) for e in ends] == [(0, 4, 1), (1, 4, 1)]
        assert "epoch 1: 4 clips" in r_.stderr and "broken.wav" in r_.stderr
    # only rank 0 wrote: one log line per step and epoch, one evaluation record per evaluation
    assert len(_log(two)) == 6 + 2
    evals = json.loads((two / "eval.json").read_text())
    assert [e["step"] for e in evals] == [0, 6] and all(e["clips"] == 2 for e in evals)
    for f in ("config.json", "model.safetensors"):
        assert (two / f).is_file()


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_losses(lj_broken, tmp_path):
    """Batch 1, 5 clips an epoch: the state saved at step 3 is in the middle of epoch 1; with
    SpecAugment, so the augmentation must come back the same too."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    common = ["--steps", "8", "--batch-size", "1", "--eval-every", "8", "--save-every", "3",
              "--spec-augment", "--workers", "1"]
    r = run_toolkit(*_args(lj_broken, ref, *common))
    assert r.returncode == 0, r.stderr
    script = Path(sys.executable).with_name("toolkit")
    proc = subprocess.Popen([str(script), *map(str, _args(lj_broken, cut, *common))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log = cut / "train_log.jsonl"
        lines = log.read_text().splitlines() if log.is_file() else []
        if sum('"loss"' in line for line in lines[:-1]) >= 5:     # the last may be partial
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(cut / "resume" / "state.pt", weights_only=True)
    assert state["step"] in (3, 6) and state["position"][1] != 0       # mid-epoch
    r = run_toolkit(*_args(lj_broken, cut, *common, "--resume"))
    assert r.returncode == 0, r.stderr
    assert f"at step {state['step']}" in r.stderr
    a, b = _losses(ref), _losses(cut)
    assert list(b) == list(range(1, 9))
    assert [b[s] for s in b] == [a[s] for s in a]                      # exactly
    wa, wb = _weights(ref), _weights(cut)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside python")
def test_two_processes_evaluate_as_one(shared_data, tmp_path):
    """The evaluation scored clip by clip on each process and summed: 2 processes give the
    1-process figures, counts and transcripts (in order) for the same weights (the trained
    default model before its first step, whose decoding ends at end-of-text: a few minutes)."""
    lj = shared_data / "ljspeech-mini"
    rows = (lj / "metadata.csv").read_text().splitlines()
    train, ev = tmp_path / "train", tmp_path / "ev"
    for d, part in ((train, rows[:2]), (ev, rows[2:5])):
        (d / "wavs").mkdir(parents=True)
        for r in part:
            shutil.copy(lj / "wavs" / f"{r.split('|')[0]}.wav", d / "wavs")
        (d / "metadata.csv").write_text("\n".join(part) + "\n")
    (ev / "wavs" / "broken.wav").write_bytes(b"RIFF not really a wav")
    with open(ev / "metadata.csv", "a") as f:
        f.write("broken|a broken file|a broken file\n")
    common = ["train", "whisper", "--data", train, "--eval-data", ev, "--steps", "1",
              "--eval-every", "1", "--workers", "0"]
    env = {**os.environ, "TOOLKIT_THREADS": "1"}
    r = run_toolkit(*common, "--batch-size", "2", "--out", tmp_path / "one", env=env)
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m",
                         "toolkit.cli", *map(str, common), "--batch-size", "1", "--out",
                         str(tmp_path / "two")], capture_output=True, text=True, env=env,
                        timeout=900)
    assert r2.returncode == 0, r2.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "eval.json").read_text())[0] for d in ("one", "two"))
    assert one["step"] == two["step"] == 0
    for k in ("cer", "wer", "cer_raw", "wer_raw", "clips", "skipped", "texts"):
        assert one[k] == two[k], k
    assert one["clips"] == 3 and one["skipped"] == 1 and len(one["texts"]) == 3
    assert 0 < one["wer"] < 20
    assert "skipped 1 evaluation file(s), unreadable or silent: broken.wav" in r2.stderr
