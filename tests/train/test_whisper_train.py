"""`toolkit train whisper`: the data layouts, the labels, SpecAugment, a short run on real clips
whose loss falls and that resumes from its step, LoRA merged into an ordinary checkpoint, and
one-line errors for bad input."""

import json
import shutil

import numpy as np
import pytest
import torch

from support.cli import fails_cleanly, run_toolkit
from toolkit.core.errors import ToolkitError
from toolkit.models.whisper.data import load_labelled_folder
from toolkit.models.whisper.loading import load_model
from toolkit.train.whisper_data import (
    Clips,
    GroupedBatches,
    index_clips,
    loader,
    spec_augment,
    token_batch,
)


@pytest.fixture(scope="module")
def lj(shared_data):
    return shared_data / "ljspeech-mini"


@pytest.fixture(scope="module")
def small_lj(lj, tmp_path_factory):
    """Six LJ clips (4 train + 2 held out) in the LJSpeech layout."""
    d = tmp_path_factory.mktemp("lj6")
    (d / "wavs").mkdir()
    rows = (lj / "metadata.csv").read_text().splitlines()[:6]
    for r in rows:
        shutil.copy(lj / "wavs" / f"{r.split('|')[0]}.wav", d / "wavs")
    (d / "metadata.csv").write_text("\n".join(rows) + "\n")
    return d


def test_three_data_layouts_load_the_same_clips(small_lj, tmp_path):
    lj_items = load_labelled_folder(small_lj)
    assert len(lj_items) == 6 and all(u.text for u in lj_items)
    # Hugging Face audiofolder: metadata.csv with a header, file_name + transcription
    af = tmp_path / "audiofolder"
    (af / "clips").mkdir(parents=True)
    lines = ["file_name,transcription"]
    for u in lj_items:
        shutil.copy(u.path, af / "clips" / u.path.name)
        lines.append(f'clips/{u.path.name},"{u.text}"')
    (af / "metadata.csv").write_text("\n".join(lines) + "\n")
    # AIHub: audio files with one JSON transcript each, in nested folders
    ai = tmp_path / "aihub"
    for i, u in enumerate(lj_items):
        sub = ai / f"speaker{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(u.path, sub / u.path.name)
        (sub / (u.path.stem + ".json")).write_text(json.dumps(
            {"fileName": u.path.name, "script": {"id": i, "value": u.text}}, ensure_ascii=False))
    for folder in (af, ai):
        items = load_labelled_folder(folder)
        assert sorted((u.path.name, u.text) for u in items) == \
            sorted((u.path.name, u.text) for u in lj_items)
    # speaker folders reuse names: each transcript belongs to the audio in its own folder
    dup = tmp_path / "dup"
    for spk, text in (("a", "first speaker"), ("b", "second speaker")):
        (dup / spk).mkdir(parents=True)
        shutil.copy(lj_items[0].path, dup / spk / "0001.wav")
        (dup / spk / "0001.json").write_text("\ufeff" + json.dumps(   # a BOM, as Excel writes
            {"fileName": "0001.wav", "script": {"value": text}}))
    assert sorted((u.path.parent.name, u.text) for u in load_labelled_folder(dup)) == [
        ("a", "first speaker"), ("b", "second speaker")]
    # a transcript missing: how many and which
    (ai / "speaker1" / (lj_items[1].path.stem + ".json")).unlink()
    with pytest.raises(ToolkitError, match=r"1 of 6 audio files .* have no transcript \(LJ001-0002"):
        load_labelled_folder(ai)
    # an audiofolder naming a file outside the folder is refused
    (af / "metadata.csv").write_text("file_name,sentence\n../../etc/passwd,x\n")
    with pytest.raises(ToolkitError, match="outside"):
        load_labelled_folder(af)


def test_labels_mask_the_prompt_and_padding():
    tok = load_model(preset="tiny").tokenizer
    prompt = tok.sot_sequence("en", "transcribe")
    ids, labels = token_batch([prompt + [10, 11, 12], prompt + [20]], len(prompt), tok.eot)
    p = len(prompt)
    # the start token is given once; position j predicts token j + 1
    assert ids[0].tolist() == prompt + [10, 11, 12] and ids[0, 0] == tok.sot
    assert ids[1].tolist() == prompt + [20] + [tok.eot] * 2
    assert labels[0].tolist() == [-100] * (p - 1) + [10, 11, 12, tok.eot]
    assert labels[1].tolist() == [-100] * (p - 1) + [20, tok.eot] + [-100] * 2


def test_spec_augment_masks_inside_the_speech_only():
    rng = np.random.default_rng(0)
    feats = np.random.default_rng(1).standard_normal((80, 3000)).astype(np.float32)
    masked = [spec_augment(feats, 500, rng) for _ in range(20)]
    changed_t = np.zeros(3000, bool)
    changed_f = np.zeros(80, bool)
    for m in masked:
        diff = m != feats
        changed_t |= diff.all(axis=0)
        changed_f |= diff.all(axis=1)
    assert changed_t[:500].any() and not changed_t[500:].any()   # time masks within speech
    assert changed_f.any()
    assert all(np.isfinite(m).all() for m in masked)
    assert (feats == np.random.default_rng(1).standard_normal((80, 3000)).astype(np.float32)).all()


def _broken_and_long(tmp_path):
    import soundfile as sf

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    long_ = tmp_path / "long.wav"
    sf.write(long_, np.random.default_rng(0).standard_normal(16000 * 31).astype(np.float32) * 0.1,
             16000)
    return broken, long_


def test_the_stream_skips_unreadable_and_long_audio_with_their_names(small_lj, tmp_path):
    from toolkit.models.whisper.data import Utterance

    tok = load_model(preset="tiny").tokenizer
    prompt = tok.sot_sequence("en", "transcribe")
    broken, long_ = _broken_and_long(tmp_path)
    items = load_labelled_folder(small_lj)[:2] + [Utterance(broken, "x"), Utterance(long_, "y")]
    index = index_clips(items)
    assert index.seconds[0] > 1 and index.seconds[2] == 0 and index.seconds[3] == 31
    clips = Clips(index, tok, prompt, 80, 448)
    stream = iter(loader(clips, GroupedBatches(index.seconds, 2, seed=0), workers=2))
    batches = [next(stream) for _ in range(2)]           # one epoch: 2 batches of 2
    assert sorted(c for b in batches for c in b.clips) == [0, 1]
    skipped = sorted(s for b in batches for s in b.skipped)
    assert [n for n, _ in skipped] == ["broken.wav", "long.wav"]
    assert "unreadable" in skipped[0][1] and "longer than 30 s" in skipped[1][1]
    assert all(b.worker_rss > 0 for b in batches)        # made in a worker process


def test_streamed_batches_are_the_in_memory_features(small_lj):
    """The workers make exactly what decoding everything first made (same audio decoding, same
    log-mel, same labels), whatever the number of workers."""
    from toolkit.models.whisper.audio import load_audio, log_mel

    tok = load_model(preset="tiny").tokenizer
    prompt = tok.sot_sequence("en", "transcribe")
    index = index_clips(load_labelled_folder(small_lj))
    clips = Clips(index, tok, prompt, 80, 448)
    got = {}
    for workers in (0, 2):
        stream = iter(loader(clips, GroupedBatches(index.seconds, 2, seed=3), workers))
        got[workers] = [next(stream) for _ in range(3)]
    for a, b in zip(got[0], got[2]):
        assert a.clips == b.clips and torch.equal(a.feats, b.feats) and torch.equal(a.ids, b.ids)
    for b in got[2]:
        want = np.stack([log_mel(load_audio(index.paths[i]), 80) for i in b.clips])
        assert np.array_equal(b.feats.numpy(), want)
        ids, labels = token_batch([prompt + tok.encode(" " + index.texts[i].strip())
                                   for i in b.clips], len(prompt), tok.eot)
        assert torch.equal(b.ids, ids) and torch.equal(b.labels, labels)
        assert b.seconds == pytest.approx(sum(index.seconds[i] for i in b.clips), abs=0.01)


def test_sampler_epochs_ranks_positions_and_length_groups(lj):
    seconds = index_clips(load_labelled_folder(lj)).seconds     # the 32 LJ clips, 1.5-10 s
    one = GroupedBatches(seconds, 4, seed=7, group=2)
    epoch0 = one.epoch_batches(0)
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(32))   # each clip once
    assert [b.tolist() for b in epoch0] == [b.tolist() for b in one.epoch_batches(0)]
    assert [b.tolist() for b in epoch0] != [b.tolist() for b in one.epoch_batches(1)]
    # two ranks with half the batch each see exactly the one process's batches, split
    ranks = [iter(GroupedBatches(seconds, 2, world=2, rank=r, seed=7, group=2)) for r in (0, 1)]
    whole = iter(one)
    for _ in range(20):                                           # over the epoch boundary
        head, *clips = next(whole)
        parts = [next(r) for r in ranks]
        assert all(p[0] == head for p in parts)
        assert parts[0][1:] + parts[1][1:] == clips and len(parts[0]) == len(parts[1])
    # a stream started at (epoch 1, batch 3) is the tail of the uninterrupted one
    full = iter(one)
    tail = [next(full) for _ in range(8 + 7)][8 + 3:]
    resumed = iter(GroupedBatches(seconds, 4, seed=7, group=2, start=(1, 3)))
    assert [next(resumed) for _ in range(len(tail))] == tail
    # length grouping: clips in a batch are closer in duration than in a random batch
    spread = {g: np.mean([np.ptp(seconds[b]) for b in
                          GroupedBatches(seconds, 4, seed=7, group_by_length=g).epoch_batches(0)])
              for g in (True, False)}
    assert spread[True] < 0.5 * spread[False]


def _log(out, key="loss"):
    """The step records (``key="loss"``) or the end-of-epoch records (``"epoch_end"``)."""
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [e for e in lines if key in e]


def test_short_run_learns_resumes_and_exports(small_lj, tmp_path):
    out = tmp_path / "run"
    args = ["train", "whisper", "--preset", "tiny", "--data", small_lj, "--eval-split", "2",
            "--language", "en", "--batch-size", "2", "--lr", "1e-3", "--warmup", "0",
            "--eval-every", "4", "--out", out]
    r = run_toolkit(*args, "--steps", "8")
    assert r.returncode == 0, r.stderr
    log = _log(out)
    assert [e["step"] for e in log] == list(range(1, 9))
    assert all(e["clips"] == 2 and e["clips_per_s"] > 0 and e["audio_h_per_s"] > 0
               and e["rss_mb"] > 100 and e["eta_s"] >= 0 for e in log)
    # 4 clips in batches of 2: an epoch every 2 steps, reported with its counts
    ends = _log(out, "epoch_end")
    assert [(e["step"], e["epoch_end"]["clips"]) for e in ends] == [(s, 4) for s in (2, 4, 6, 8)]
    assert "epoch 4: 4 clips" in r.stderr
    # random weights start near ln(51865) = 10.9; 8 steps on 4 clips bring it down
    assert np.mean([e["loss"] for e in log[-3:]]) < 0.9 * np.mean([e["loss"] for e in log[:3]])
    evals = json.loads((out / "eval.json").read_text())
    assert [e["step"] for e in evals] == [0, 4, 8] and evals[0]["train_loss"] is None
    assert all(e["cer"] is not None and len(e["texts"]) == 2 for e in evals)
    # a plain Hugging Face checkpoint beside the run's files
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        assert (out / f).is_file()
    # the same command again without --resume refuses to touch the run
    fails_cleanly(*args, "--steps", "8", contains="already holds a training run; add --resume")
    r = run_toolkit(*args, "--steps", "10", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr and "at step 8" in r.stderr
    assert [e["step"] for e in _log(out)] == list(range(1, 11))
    assert [e["step"] for e in json.loads((out / "eval.json").read_text())] == [0, 4, 8, 10]
    loaded = load_model(checkpoint=str(out))
    assert not loaded.random_init and loaded.config.num_mel_bins == 80
    r = run_toolkit("export", "whisper", "--checkpoint", out, "--out", tmp_path / "art")
    assert r.returncode == 0, r.stderr


def test_lora_is_merged_into_an_ordinary_checkpoint(small_lj, tmp_path):
    out = tmp_path / "lora"
    r = run_toolkit("train", "whisper", "--preset", "tiny", "--data", small_lj, "--eval-split",
                    "2", "--language", "en", "--batch-size", "2", "--lr", "1e-2", "--steps", "3",
                    "--lora", "--lora-rank", "4", "--eval-every", "3", "--gradient-checkpointing",
                    "--out", out)
    assert r.returncode == 0, r.stderr
    assert "(LoRA)" in r.stderr
    base = load_model(preset="tiny").model.state_dict()
    tuned = load_model(checkpoint=str(out)).model.state_dict()
    assert set(tuned) == set(base)                        # no adapter tensors left
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(".q_proj.weight" in k or ".v_proj.weight" in k for k in changed)
    # with gradient checkpointing the encoder's adapters learn too, not only the decoder's
    assert any(k.startswith("model.encoder.") for k in changed)
    assert any(k.startswith("model.decoder.") for k in changed)


def test_bad_training_input_fails_in_one_line(small_lj, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "o"
    fails_cleanly("train", "whisper", "--preset", "tiny", "--data", empty, "--language", "en",
                  "--out", out, contains="holds no labelled audio")
    fails_cleanly("train", "whisper", "--preset", "tiny", "--data", small_lj, "--language", "en",
                  "--batch-size", "0", "--out", out, contains="--batch-size must be at least 1")
    fails_cleanly("train", "whisper", "--preset", "tiny", "--data", small_lj, "--language", "xx",
                  "--out", out, contains="unknown language 'xx'")
    fails_cleanly("train", "whisper", "--preset", "tiny", "--data", small_lj, "--out", out,
                  contains="multilingual: give --language")
    fails_cleanly("train", "whisper", "--data", small_lj, "--language", "ko", "--out", out,
                  contains="English-only model (.en): it cannot learn --language ko")
    fails_cleanly("train", "whisper", "--preset", "tiny", "--data", small_lj, "--language", "en",
                  "--out", out, "--resume", contains="nothing to resume")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    fails_cleanly("train", "whisper", "--preset", "tiny", "--data", small_lj, "--language", "en",
                  "--out", mine, contains="not empty and not a toolkit training run")
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    assert not out.exists()
