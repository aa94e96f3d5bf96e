"""`toolkit train whisper`'s evaluation scores each clip as it comes (counts, not transcripts):
the same figures as scoring the whole list at once, a bounded number of transcripts kept, skips
counted; and the progress text names every figure the issue asks for."""

import json
import re
import shutil

import pytest

import toolkit.train.whisper as tw
from support.cli import run_toolkit
from toolkit.bench.metrics import RunningScores, scores
from toolkit.models.whisper.loading import load_model
from toolkit.runtime.whisper.pipeline import DecodeResult

PAIRS = [
    ("It imitates a much freer hand, simpler, rounder.", "It imitates a much freer hand; simpler, "
     "rounder,"),
    ("in fourteen sixty-five", "In 1465, Sweynheim"),
    ("", "nothing was heard"),
    ("words where there were none", ""),
    ("  Spaces   around  ", "spaces around"),
    ("the colour of 15 things", "The color of fifteen things."),
]


@pytest.mark.parametrize("language", ["en", "ko", "fr"])
def test_running_scores_are_the_corpus_scores(language):
    hyps, refs = zip(*PAIRS)
    running = RunningScores(language)
    for h, r in PAIRS:
        running.add(h, r)
    assert running.result() == scores(list(hyps), list(refs), language)
    # counts made apart (two processes) and summed give the same figures
    a, b = RunningScores(language), RunningScores(language)
    for k, (h, r) in enumerate(PAIRS):
        (a if k % 2 else b).add(h, r)
    summed = RunningScores.from_counts([x + y for x, y in zip(a.counts, b.counts)], language)
    assert summed.result() == running.result()
    assert summed.counts[RunningScores.FIELDS.index("pairs")] == len(PAIRS)


@pytest.fixture(scope="module")
def eval_folder(shared_data, tmp_path_factory):
    """Five LJ clips and a broken one, in the LJSpeech layout."""
    lj = shared_data / "ljspeech-mini"
    d = tmp_path_factory.mktemp("lj-eval")
    (d / "wavs").mkdir()
    rows = (lj / "metadata.csv").read_text().splitlines()[:5]
    for r in rows:
        shutil.copy(lj / "wavs" / f"{r.split('|')[0]}.wav", d / "wavs")
    (d / "wavs" / "broken.wav").write_bytes(b"RIFF not really a wav")
    rows.insert(1, "broken|a broken file|a broken file")
    (d / "metadata.csv").write_text("\n".join(rows) + "\n")
    return d


class _Pipe:
    """The decode loop's interface: returns the reference's tokens for every other clip and a
    wrong transcript for the others, counting the clips it saw."""

    def __init__(self, tokenizer, refs):
        self.tokenizer, self.refs, self.calls = tokenizer, iter(refs), 0

    def decode(self, audio, prompt, max_new_tokens=224):
        assert audio.ndim == 1 and len(audio) > 16000
        ref = next(self.refs)
        self.calls += 1
        text = ref if self.calls % 2 else "something else entirely"
        return DecodeResult([self.tokenizer.encode(" " + text)], 1, [0.0])


def test_evaluation_scores_every_clip_and_keeps_few_transcripts(eval_folder, tmp_path,
                                                                monkeypatch):
    monkeypatch.setattr(tw, "EVAL_TEXTS", 3)
    opts = tw.TrainOptions(data=eval_folder, eval_data=eval_folder, out=tmp_path / "run",
                           preset="tiny", language="en", workers=0)
    run = tw._Trainer(opts, load_model(None, "tiny", 0), opts.out, tw._Group())
    opts.out.mkdir()
    refs = [t for p, t in zip(run.eval_index.paths, run.eval_index.texts)
            if not p.endswith("broken.wav")]
    run.pipe = _Pipe(run.tok, refs)
    rec = run.evaluate(0, None)
    assert run.pipe.calls == 5
    hyps = [r if k % 2 == 0 else "something else entirely" for k, r in enumerate(refs)]
    want = scores(hyps, refs, "en")
    assert rec["cer"] == pytest.approx(want["cer"]) and rec["wer"] == pytest.approx(want["wer"])
    assert 0 < rec["cer"] < 100
    assert rec["clips"] == 5 and rec["skipped"] == 1
    # clips 0..2 of the folder are kept (1 is the broken one): 2 transcripts, in order
    assert rec["texts"] == [hyps[0].strip(), hyps[1].strip()]
    assert rec["texts_of"] == "the first 2 of 5 clips"
    assert json.loads((opts.out / "eval.json").read_text())[0]["cer"] == rec["cer"]
    assert (opts.out / "model.safetensors").is_file()          # the best so far: written


def test_progress_text_names_every_figure():
    rec = {"loss": 0.123456, "lr": 3.75e-5, "clips_per_s": 12.3456, "audio_h_per_s": 0.0123,
           "eta_s": 3725, "rss_mb": 3750.0}
    text = tw.progress_text(rec, 2.51, eta=True)
    assert text == ("loss 0.1235 lr 3.75e-05 | 12.3 samples/s 0.0123 audio-h/s | ETA 1:02:05 "
                    "| CPU RSS 3.75 GB | CER 2.51")
    gpu = tw.progress_text({**rec, "gpu_mb": 20500.0, "gpu_in_use_mb": 12250.0})
    assert "ETA" not in gpu and gpu.endswith("| GPU 12.25 GB in use, 20.50 GB peak")


def test_progress_lines_in_a_log_name_every_figure(shared_data, tmp_path):
    """The console script with stderr a pipe (not a terminal): plain progress lines, the
    first and the last step's, with loss, lr, samples/s, audio hours/s, ETA, the CPU memory and
    the last CER (the trained default model: its evaluation stops at end-of-text, so this stays
    short)."""
    lj = shared_data / "ljspeech-mini"
    d = tmp_path / "lj3"
    (d / "wavs").mkdir(parents=True)
    rows = (lj / "metadata.csv").read_text().splitlines()[:3]
    for r in rows:
        shutil.copy(lj / "wavs" / f"{r.split('|')[0]}.wav", d / "wavs")
    (d / "metadata.csv").write_text("\n".join(rows) + "\n")
    out, cache = tmp_path / "run", tmp_path / "features"
    r = run_toolkit("train", "whisper", "--data", d, "--eval-split", "1", "--steps", "2",
                    "--batch-size", "1", "--eval-every", "2", "--workers", "0", "--out", out,
                    "--feature-cache", cache, env={"TOOLKIT_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    # --feature-cache: its size said before the first step, then one file per training clip
    said = r.stderr.index("feature cache ")
    assert said < r.stderr.index("step 1/2")
    assert "2 clips × 0.96 MB (float32 80 × 3000) = 0.00 GB at most" in r.stderr[said:]
    assert len(list(cache.rglob("*.npy"))) == 2
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    log = [e for e in log if "loss" in e]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"], r.stderr
    line = re.compile(r"step (\d)/2 loss (\d+\.\d{4}) lr \S+ \| (\S+) samples/s (\S+) "
                      r"audio-h/s \| ETA (\d+):(\d\d):(\d\d) \| CPU RSS (\d+\.\d\d) GB "
                      r"\| CER (\d+\.\d\d)$")
    for ln in lines:
        m = line.match(ln)
        assert m, ln
        step, loss, samples, hours, *_, rss, cer = m.groups()
        rec = log[int(step) - 1]
        assert float(loss) == pytest.approx(rec["loss"], abs=1e-4)
        assert float(samples) == pytest.approx(rec["clips_per_s"], rel=0.01) and float(samples) > 0
        assert float(hours) == pytest.approx(rec["audio_h_per_s"], rel=0.01) and float(hours) > 0
        assert float(rss) == pytest.approx(rec["rss_mb"] / 1e3, abs=0.01) and float(rss) > 0.1
        assert "GPU" not in ln                                   # a CPU run: no GPU figure
    assert lines[-1].split("| ETA ")[1].startswith("0:00:00")
    evals = json.loads((out / "eval.json").read_text())
    assert lines[-1].endswith(f"| CER {evals[-1]['cer']:.2f}")
