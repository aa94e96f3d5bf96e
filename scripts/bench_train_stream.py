"""Measure the streamed Whisper training data path (issue 28): bounded memory and throughput.

    python scripts/bench_train_stream.py make --n 5000 --out /tmp/lj5000   # a folder (not kept)
    python scripts/bench_train_stream.py memory --data /tmp/lj5000 --steps 30
    python scripts/bench_train_stream.py in-memory --data /tmp/lj5000     # the old path's peak
    python scripts/bench_train_stream.py throughput --data ../shared/data/ljspeech-mini
    python scripts/bench_train_stream.py all --json results/whisper-train-stream.json
    python scripts/bench_train_stream.py eval-memory --data /tmp/lj5000      # one evaluation
    python scripts/bench_train_stream.py eval-all --json results/whisper-eval-stream.json

``make``: the 32 LJ clips repeated with varied gain (0.3-1.0), speed (0.9-1.1, resampled) and
offset (0-0.5 s of silence in front, or 0-0.3 s cut off), 16 kHz PCM WAV, LJSpeech layout.
``memory``: a ``toolkit train whisper`` run (tiny preset, batch 8, 2 workers) as a child
process; the resident memory of the trainer and of its worker processes is read from /proc
every 50 ms: the trainer's peak, the largest worker's peak, and the peak of their sum.
``in-memory``: the path the trainer had before streaming — every clip decoded first — and its
peak RSS. ``throughput``: clips/s of the streamed loader (2 workers) against the in-memory
path (decode once, log-mel per batch in the training process), over 3 epochs of the folder.
``eval-memory``: the training command's evaluation pass (``_Trainer.evaluate``: the default
tiny.en, greedy decode with the toolkit's loop, CER/WER, eval.json, the checkpoint and the
resume state written) over every clip of a folder, in a child process (one torch thread)
whose resident memory is read from /proc every 50 ms; the child also logs its RSS every 100
clips. ``scoring-memory``: the peak of scoring N transcripts the former way (every hypothesis
held, jiwer over the whole list) against ``RunningScores`` (counts only). ``eval-all``: both,
for a 200-clip and a 5000-clip folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LJ = ROOT.parent / "shared" / "data" / "ljspeech-mini"
SPEEDS = (0.9, 0.95, 1.0, 1.05, 1.1)


def make(n: int, out: Path, seed: int = 0) -> Path:
    import soundfile as sf

    from toolkit.core.audio import resample
    from toolkit.models.whisper.audio import load_audio
    from toolkit.models.whisper.data import load_labelled_folder

    items = load_labelled_folder(LJ)
    base = [load_audio(u.path) for u in items]
    variants = {(i, s): resample(a, round(16000 * s), 16000) for i, a in enumerate(base)
                for s in SPEEDS}     # played s× faster: fewer samples at 16 kHz
    rng = np.random.default_rng(seed)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        i = k % len(items)
        audio = variants[(i, SPEEDS[int(rng.integers(len(SPEEDS)))])] * rng.uniform(0.3, 1.0)
        shift = int(rng.uniform(-0.3, 0.5) * 16000)
        audio = (np.concatenate([np.zeros(shift, np.float32), audio]) if shift > 0
                 else audio[-shift:])
        name = f"clip{k:05d}"
        sf.write(out / "wavs" / f"{name}.wav", np.clip(audio, -1, 1), 16000, subtype="PCM_16")
        rows.append(f"{name}|{items[i].text}|{items[i].text}")
    (out / "metadata.csv").write_text("\n".join(rows) + "\n")
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def watch(cmd: list[str], env=None, stdout: bool = False):
    """Run ``cmd``; the peak RSS of it, of its largest child and of their sum (MB)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak = {"main": 0, "worker": 0, "total": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            main = _rss(proc.pid)
            kids = [_rss(k) for k in _children(proc.pid)]
            peak["main"] = max(peak["main"], main)
            peak["worker"] = max([peak["worker"], *kids])
            peak["total"] = max(peak["total"], main + sum(kids))
            done.wait(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    t.start()
    out, err = proc.communicate()
    done.set()
    t.join()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    res = {f"peak_{k}_mb": round(v / 1e6, 1) for k, v in peak.items()} | {
        "wall_s": round(time.perf_counter() - t0, 1)}
    return (res, out) if stdout else res


def memory(data: Path, steps: int, workers: int = 2) -> dict:
    toolkit = Path(sys.executable).with_name("toolkit")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(toolkit), "train", "whisper", "--preset", "tiny", "--language", "en",
               "--data", str(data), "--eval-split", "4", "--steps", str(steps), "--batch-size",
               "8", "--workers", str(workers), "--eval-every", str(steps), "--out",
               str(Path(tmp) / "run")]
        res = watch(cmd)
        log = [json.loads(x) for x in (Path(tmp) / "run" / "train_log.jsonl").read_text()
               .splitlines()]
    rates = [e["clips_per_s"] for e in log if "clips_per_s" in e][1:]
    return res | {"command": " ".join(cmd[1:]).replace(tmp, "TMP"),
                  "clips": sum(1 for _ in (data / "wavs").iterdir()),
                  "clips_per_s_median": statistics.median(rates) if rates else None}


def in_memory_peak(data: Path) -> dict:
    """Decode every clip first (the trainer's former ``_examples``), in a child process."""
    code = ("import sys; from toolkit.models.whisper.data import load_labelled_folder;"
            "from toolkit.models.whisper.audio import load_audio;"
            "from toolkit.core.memory import high_water_bytes;"
            "a=[load_audio(u.path) for u in load_labelled_folder(sys.argv[1])];"
            "print(high_water_bytes(), sum(x.nbytes for x in a))")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True,
                       check=True)
    hwm, audio = map(int, r.stdout.split())
    return {"peak_rss_mb": round(hwm / 1e6, 1), "audio_mb": round(audio / 1e6, 1),
            "wall_s": round(time.perf_counter() - t0, 1)}


def throughput(data: Path, epochs: int = 3, batch: int = 8, workers: int = 2,
               repeats: int = 3) -> dict:
    import torch

    from toolkit.models.whisper.audio import load_audio, log_mel
    from toolkit.models.whisper.data import load_labelled_folder
    from toolkit.models.whisper.loading import load_model
    from toolkit.train.whisper_data import Clips, GroupedBatches, index_clips, loader, token_batch

    tok = load_model(preset="tiny").tokenizer
    prompt = tok.sot_sequence("en", "transcribe")
    items = load_labelled_folder(data)
    n = len(items)

    def in_memory() -> float:      # decode once, then log-mel per batch (the former trainer)
        t0 = time.perf_counter()
        audio = [load_audio(u.path) for u in items]
        tokens = [tok.encode(" " + u.text.strip()) for u in items]
        rng = np.random.default_rng(0)
        for _ in range(epochs):
            order = rng.permutation(n)
            for i in range(0, n, batch):
                idx = order[i:i + batch]
                torch.from_numpy(np.stack([log_mel(audio[j], 80) for j in idx]))
                token_batch([prompt + tokens[j] for j in idx], len(prompt), tok.eot)
        return epochs * n / (time.perf_counter() - t0)

    def streamed() -> float:
        t0 = time.perf_counter()
        index = index_clips(items)
        clips = Clips(index, tok, prompt, 80, 448)
        sampler = GroupedBatches(index.seconds, batch, seed=0)
        stream = iter(loader(clips, sampler, workers))
        got = 0
        while got < epochs * n:
            got += len(next(stream).clips)
        rate = got / (time.perf_counter() - t0)
        del stream
        return rate

    torch.set_num_threads(os.cpu_count() or 1)
    res = {"in_memory": [], "streamed": []}
    for _ in range(repeats):
        res["in_memory"].append(round(in_memory(), 2))
        res["streamed"].append(round(streamed(), 2))
    med = {k: statistics.median(v) for k, v in res.items()}
    return {"clips": n, "epochs": epochs, "batch": batch, "workers": workers,
            "clips_per_s": res, "median_in_memory": med["in_memory"],
            "median_streamed": med["streamed"],
            "streamed_over_in_memory": round(med["streamed"] / med["in_memory"], 3)}


def stub_model(seed: int = 0):
    """tiny.en's tokenizer and settings on a 1-layer, d-64 Whisper whose decoder ends every
    transcript after its first token (the final layer norm outputs one vector that only the
    end-of-text embedding matches): the evaluation's own code at a few clips a second, where
    the trained tiny.en decodes one clip in about a second on this CPU."""
    import dataclasses

    import torch
    from transformers import WhisperForConditionalGeneration

    from toolkit.models.whisper.loading import load_model, preset_config

    base = load_model(None, "tiny.en", seed)
    cfg = preset_config("tiny.en")
    cfg.update({"d_model": 64, "encoder_layers": 1, "decoder_layers": 1, "encoder_ffn_dim": 128,
                "decoder_ffn_dim": 128, "encoder_attention_heads": 2,
                "decoder_attention_heads": 2})
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    with torch.no_grad():
        v = torch.randn(64)
        norm = model.model.decoder.layer_norm
        norm.weight.zero_()
        norm.bias.copy_(v)
        emb = model.model.decoder.embed_tokens.weight
        emb.zero_()
        emb[base.tokenizer.eot] = v
    return dataclasses.replace(base, model=model)


def eval_child(data: Path, out: Path, log: Path, stub: bool = False) -> None:
    """In the child: one evaluation of the training command over every clip of ``data``."""
    import torch

    torch.set_num_threads(1)
    from toolkit.core.memory import high_water_bytes, rss_bytes
    from toolkit.export.whisper.plan import build_plan
    from toolkit.models.whisper.loading import load_model
    from toolkit.runtime.from_model import open_model
    from toolkit.runtime.graphs import make_pipeline
    from toolkit.runtime.whisper.pipeline import from_graphs
    from toolkit.train.whisper import TrainOptions, _Group, _Trainer

    opts = TrainOptions(data=LJ, eval_data=data, out=out, workers=0)
    run = _Trainer(opts, stub_model() if stub else load_model(None, None, 0), out, _Group())
    out.mkdir(parents=True)
    run.pipe = make_pipeline(open_model(run.loaded, build_plan, "torch"), from_graphs)
    decode, done, t0 = run.pipe.decode, [0], time.perf_counter()
    logf = open(log, "w", buffering=1)

    def counted(*a, **k):
        res = decode(*a, **k)
        done[0] += 1
        if done[0] % 100 == 0 or done[0] == 1:
            logf.write(json.dumps({"clips": done[0], "rss_mb": round(rss_bytes() / 1e6, 1),
                                   "s": round(time.perf_counter() - t0, 1)}) + "\n")
        return res

    run.pipe.decode = counted
    before = rss_bytes()
    rec = run.evaluate(0, None)
    logf.write(json.dumps({"clips": done[0], "rss_mb": round(rss_bytes() / 1e6, 1),
                           "s": round(time.perf_counter() - t0, 1), "end": True}) + "\n")
    print(json.dumps({"rss_before_eval_mb": round(before / 1e6, 1),
                      "hwm_mb": round(high_water_bytes() / 1e6, 1), "cer": rec["cer"],
                      "wer": rec["wer"], "clips": rec["clips"], "skipped": rec["skipped"],
                      "texts_kept": len(rec["texts"]),
                      "eval_json_bytes": (out / "eval.json").stat().st_size}))


def eval_memory(data: Path, stub: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "rss.jsonl"
        cmd = [sys.executable, __file__, "eval-child", "--data", str(data), "--out",
               str(Path(tmp) / "run"), "--log", str(log), *(["--stub"] if stub else [])]
        res, stdout = watch(cmd, env={"OMP_NUM_THREADS": "1", "TOOLKIT_THREADS": "1"},
                            stdout=True)
        curve = [json.loads(x) for x in log.read_text().splitlines()]
    child = json.loads(stdout.strip().splitlines()[-1])
    return {"model": "stub" if stub else "tiny.en (trained, the default)",
            "clips": sum(1 for _ in (data / "wavs").iterdir()), **res, **child,
            "rss_curve": curve, "clips_per_s": round(child["clips"] / curve[-1]["s"], 3)}


def scoring_memory(n: int) -> dict:
    """Peak RSS added by scoring ``n`` LJ-like transcripts: all held + one corpus call (the
    former evaluation) against one pair at a time into ``RunningScores``."""
    code = """if True:
        import sys, json
        from toolkit.bench.metrics import RunningScores, scores
        from toolkit.core.memory import high_water_bytes, rss_bytes
        from toolkit.models.whisper.data import load_labelled_folder
        base = [u.text for u in load_labelled_folder(sys.argv[1])]
        n, how = int(sys.argv[2]), sys.argv[3]
        scores(base[:2], base[:2])                     # imports and normaliser loaded
        before = rss_bytes()
        def pair(k):     # a hypothesis one word off its reference, a new string each time
            ref = base[k % len(base)]
            return ref.replace(" ", " a ", 1) + f" {k}", ref
        if how == "held":
            hyps, refs = zip(*(pair(k) for k in range(n)))
            got = scores(list(hyps), list(refs))
        else:
            running = RunningScores()
            for k in range(n):
                running.add(*pair(k))
            got = running.result()
        print(json.dumps({"added_mb": round((high_water_bytes() - before) / 1e6, 1),
                          "cer": got["cer"]}))
    """
    res = {}
    for how in ("held", "running"):
        r = subprocess.run([sys.executable, "-c", code, str(LJ), str(n), how],
                           capture_output=True, text=True, check=True)
        res[how] = json.loads(r.stdout)
    assert res["held"]["cer"] == res["running"]["cer"]
    return {"transcripts": n, **res}


def eval_all(real: bool = True) -> dict:
    """200 and 5000 clips: the evaluation's peak RSS, and the scoring's alone."""
    import platform

    tmp = Path(tempfile.mkdtemp(prefix="lj-eval-"))
    report = {"command": "python scripts/bench_train_stream.py eval-all",
              "load_before": os.getloadavg(), "machine": platform.processor() or platform.machine()}
    try:
        for n in (200, 5000):
            report[f"scoring_{n}"] = scoring_memory(n)
            print(json.dumps(report[f"scoring_{n}"]), flush=True)
        for n in (200, 5000):
            folder = make(n, tmp / f"lj{n}")
            runs = [("stub", True)] + ([("tiny_en", False)] if n == 200 and real else [])
            for name, stub in runs:
                key = f"eval_{name}_{n}"
                report[key] = eval_memory(folder, stub)
                print(json.dumps({k: v for k, v in report[key].items() if k != "rss_curve"}),
                      flush=True)
            shutil.rmtree(folder, ignore_errors=True)
        e2, e5 = report["eval_stub_200"], report["eval_stub_5000"]
        report["ratio_5000_over_200"] = {k: round(e5[k] / e2[k], 3)
                                         for k in ("peak_main_mb", "hwm_mb")}
        report["load_after"] = os.getloadavg()
        print(json.dumps(report["ratio_5000_over_200"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("make", "memory", "in-memory", "throughput", "all",
                                     "eval-memory", "eval-child", "scoring-memory", "eval-all"))
    ap.add_argument("--log", type=Path)
    ap.add_argument("--stub", action="store_true", help="eval-child/eval-memory: the stub model")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--data", type=Path, default=LJ)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.what == "make":
        print(make(a.n, a.out))
        return
    if a.what == "memory":
        print(json.dumps(memory(a.data, a.steps), indent=1))
        return
    if a.what == "in-memory":
        print(json.dumps(in_memory_peak(a.data), indent=1))
        return
    if a.what == "eval-child":
        eval_child(a.data, a.out, a.log, a.stub)
        return
    if a.what == "eval-memory":
        print(json.dumps(eval_memory(a.data, a.stub), indent=1))
        return
    if a.what == "scoring-memory":
        print(json.dumps(scoring_memory(a.n), indent=1))
        return
    if a.what == "eval-all":
        report = eval_all()
        if a.json:
            a.json.write_text(json.dumps(report, indent=1) + "\n")
        return
    if a.what == "throughput":
        print(json.dumps(throughput(a.data), indent=1))
        return
    tmp = Path(tempfile.mkdtemp(prefix="lj-stream-"))
    try:
        report = {"throughput_lj32": throughput(LJ)}
        print(json.dumps(report, indent=1), flush=True)
        for n in (200, 5000):
            folder = make(n, tmp / f"lj{n}")
            report[f"train_{n}"] = memory(folder, a.steps)
            report[f"in_memory_decode_{n}"] = in_memory_peak(folder)
            print(json.dumps({k: report[k] for k in (f"train_{n}", f"in_memory_decode_{n}")},
                             indent=1), flush=True)
        t2, t5 = report["train_200"], report["train_5000"]
        report["ratio_5000_over_200"] = {k: round(t5[k] / t2[k], 3) for k in
                                         ("peak_main_mb", "peak_worker_mb", "peak_total_mb")}
        print(json.dumps(report["ratio_5000_over_200"], indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
