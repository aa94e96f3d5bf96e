"""Whisper export → onnxruntime → decode loop, against PyTorch and Hugging Face generate."""

import json

import numpy as np
import pytest
import torch

from support.zoo import export as export_model
from support.zoo import save_small_checkpoint
from toolkit import registry
from toolkit.core.errors import ToolkitError
from toolkit.models.whisper.loading import load_model as load_whisper

open_pipeline = registry.get("whisper").open_pipeline


@pytest.fixture(scope="module")
def tiny():
    return load_whisper(preset="tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_fp32(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "fp32"
    export_model(tiny, "fp32", out)
    return out


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("ckpt") / "whisper-small-128")


def test_ort_fp32_equals_hugging_face_generate_on_jfk(tiny, tiny_fp32, shared_data):
    from toolkit.models.whisper.audio import features_for, load_audio

    jfk = shared_data / "audio" / "jfk.flac"
    feats = features_for(load_audio(jfk), 80)
    hf = tiny.model.generate(torch.from_numpy(feats), language="en", task="transcribe",
                             max_new_tokens=40, do_sample=False, num_beams=1)
    tok = tiny.tokenizer
    hf_tokens = [t for t in hf[0].tolist() if t not in tok.sot_sequence("en")]
    hf_tokens = hf_tokens[:hf_tokens.index(tok.eot)] if tok.eot in hf_tokens else hf_tokens
    ort = open_pipeline(artifact=tiny_fp32, backend="ort").transcribe_windows(jfk, language="en", max_new_tokens=40)
    assert len(hf_tokens) > 5
    assert ort["tokens"] == hf_tokens
    pt = open_pipeline(loaded=tiny, backend="torch").transcribe_windows(jfk, language="en", max_new_tokens=40)
    assert pt["tokens"] == hf_tokens


def test_long_audio_is_transcribed_window_by_window(tiny_fp32, shared_data, tmp_path):
    import soundfile as sf

    from toolkit.models.whisper.audio import load_audio

    audio = load_audio(shared_data / "audio" / "jfk.flac")
    long = tmp_path / "long.wav"
    sf.write(str(long), np.concatenate([audio, audio, audio]), 16000)  # 33 s
    res = open_pipeline(artifact=tiny_fp32, backend="ort").transcribe_windows(long, language="en", max_new_tokens=5)
    assert res["windows"] == 2 and len(res["window_tokens"]) == 2
    assert all(len(w) > 0 for w in res["window_tokens"])
    assert abs(res["audio_seconds"] - 33.0) < 0.1


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_128_mel_checkpoint_exports_and_transcribes(small_ckpt, tmp_path, shared_data, precision):
    out = tmp_path / precision
    calib = shared_data / "ljspeech-mini"
    m = registry.get("whisper").export(checkpoint=str(small_ckpt), precision=precision, out=out,
                       calib_data=calib if precision == "int8" else None)
    assert m["model_config"]["num_mel_bins"] == 128 and m["model_config"]["d_model"] == 64
    assert m["source"]["checkpoint"] == str(small_ckpt) and len(m["source"]["sha256"]) == 64
    assert m["random_init"] is False
    g = m["graphs"]
    if precision == "int8":
        assert g["encoder"]["quantized_nodes"] > 0 and g["decoder"]["quantized_nodes"] > 0
    if precision == "fp16":
        assert g["encoder"]["fp32_nodes"] > 0
    jfk = shared_data / "audio" / "jfk.flac"
    res = open_pipeline(artifact=out, backend="ort").transcribe_windows(jfk, language="en", max_new_tokens=12,
                                               force_length=True)
    ref = open_pipeline(checkpoint=str(small_ckpt), backend="torch").transcribe_windows(
        jfk, language="en", max_new_tokens=12, force_length=True)
    assert len(res["tokens"]) == 12
    if precision == "fp32":
        assert res["tokens"] == ref["tokens"]
    # 128-bin features run; 80-bin features are refused with a one-line error
    pipe = open_pipeline(artifact=out, backend="ort")
    with pytest.raises(ToolkitError, match="80 mel bins but this model expects 128"):
        pipe.encode(np.zeros((1, 80, 3000), np.float32))


def test_artifact_refusals(tiny_fp32, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_fp32, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["family"] = "svt"
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ToolkitError, match="holds a 'svt' model"):
        open_pipeline(artifact=bad, backend="ort")
    m["family"] = "whisper"
    m["graphs"]["decoder"]["inputs"][0]["name"] = "tokens"
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ToolkitError, match="does not match the graph"):
        open_pipeline(artifact=bad, backend="ort")
    (bad / "manifest.json").unlink()
    with pytest.raises(ToolkitError, match="no manifest.json"):
        open_pipeline(artifact=bad, backend="ort")


def test_loading_errors(tmp_path):
    with pytest.raises(ToolkitError, match="unknown Whisper preset 'huge'"):
        load_whisper(preset="huge")
    with pytest.raises(ToolkitError, match="does not exist"):
        load_whisper(checkpoint=str(tmp_path / "nope"))
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ToolkitError, match="is a 'bert' model, not Whisper"):
        load_whisper(checkpoint=str(other))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ToolkitError, match="no config.json"):
        load_whisper(checkpoint=str(empty))


def test_nan_logits_stop_decoding_in_one_line(tiny):
    """fp16 overflow at run time shows up as NaN logits: the loop stops and names the stage."""
    pipe = open_pipeline(loaded=tiny, backend="torch")
    run = pipe.decoder.run_device

    def overflowing(feeds):
        out = dict(run(feeds))
        out["logits"] = np.full_like(pipe.decoder.to_host(out["logits"]), np.nan)
        return out

    pipe.decoder.run_device = overflowing
    cross = pipe.encode(np.zeros((1, 80, 3000), np.float32))
    with pytest.raises(ToolkitError, match="produced NaN or infinite logits at step 0"):
        pipe.decode_windows(cross, [50258, 50259, 50359, 50363], 4)
