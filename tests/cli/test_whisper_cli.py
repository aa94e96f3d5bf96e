"""The CLI end to end (export, transcribe, bench, doctor) and its one-line errors."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from support.cli import fails_cleanly
from support.zoo import save_small_checkpoint
from toolkit.cli import app

runner = CliRunner()


def _ok(result):
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("cli") / "ckpt", mels=80, vocab=51865)


def test_doctor_json():
    info = json.loads(_ok(runner.invoke(app, ["doctor", "--json"])).stdout)
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]
    assert info["torch"] and info["threads_used"] >= 1


def test_export_transcribe_json(ckpt, tmp_path, shared_data):
    out = tmp_path / "art"
    _ok(runner.invoke(app, ["export", "whisper", "--checkpoint", str(ckpt), "--out", str(out)]))
    assert (out / "manifest.json").is_file() and (out / "decoder.onnx").is_file()
    res = _ok(runner.invoke(app, ["transcribe", str(shared_data / "audio" / "jfk.flac"),
                                  "--artifact", str(out), "--language", "en",
                                  "--max-new-tokens", "6", "--json"]))
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec["backend"] == "ort" and rec["language"] == "en" and rec["random_init"] is False
    assert isinstance(rec["text"], str) and 1 <= len(rec["tokens"]) <= 6
    res = _ok(runner.invoke(app, ["transcribe", str(shared_data / "audio" / "jfk.flac"),
                                  "--checkpoint", str(ckpt), "--backend", "torch",
                                  "--language", "en", "--max-new-tokens", "6", "--json"]))
    assert json.loads(res.stdout.strip().splitlines()[-1])["tokens"] == rec["tokens"]


def test_one_line_errors(ckpt, tmp_path, shared_data):
    """The console script, as a user runs it: exit 2, one `error:` line, no traceback."""
    jfk = shared_data / "audio" / "jfk.flac"
    fails_cleanly("export", "llama", contains="unknown model 'llama'")
    fails_cleanly("export", "whisper", "--preset", "huge", contains="unknown Whisper preset")
    fails_cleanly("export", "whisper", "--checkpoint", tmp_path / "missing",
                  contains="does not exist")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fails_cleanly("export", "whisper", "--checkpoint", ckpt, "--out", blocker / "sub",
                  contains="cannot write")
    assert not (blocker.parent / "sub").exists()
    notaudio = tmp_path / "readme.mp3"
    notaudio.write_text("hello")
    fails_cleanly("transcribe", notaudio, "--checkpoint", ckpt, "--backend", "torch",
                  contains="cannot decode")
    fails_cleanly("transcribe", jfk, "--artifact", tmp_path, contains="no manifest.json")
    fails_cleanly("transcribe", jfk, "--checkpoint", ckpt, "--backend", "tpu",
                  contains="unknown backend")
    feats = tmp_path / "feats.npy"
    np.save(feats, np.zeros((128, 3000), np.float32))
    fails_cleanly("transcribe", feats, "--checkpoint", ckpt, "--backend", "torch",
                  contains="128 mel bins but this model expects 80")
    fails_cleanly("bench", "--model", "whisper", "--steps", "10",
                  contains="--steps does not apply to whisper; it applies to gradtts")
    fails_cleanly("bench", "--model", "whisper", "--runs", "0", contains="--runs must be at least 1")
    fails_cleanly("bench", "--model", "whisper", "--precision", "int4",
                  contains="whisper does not offer --precision int4; only internvl does")
    fails_cleanly("bench", "--model", "whisper", "--precision", "fp8",
                  contains="unknown precision 'fp8'")


@pytest.mark.slow
def test_bench_writes_records(ckpt, tmp_path):
    out = tmp_path / "bench.json"
    res = _ok(runner.invoke(app, [
        "bench", "--model", "whisper", "--checkpoint", str(ckpt), "--backend", "torch,ort",
        "--precision", "fp32,int8,int8-cpu", "--runs", "1", "--warmup", "0", "--limit", "2",
        "--tokens", "6", "--out", str(out), "--workdir", str(tmp_path / "work")]))
    assert "whisper-ckpt bench" in res.stdout and "RTF = processing time" in res.stdout
    records = json.loads(out.read_text())
    assert {(r["backend"], r["precision"]) for r in records} == {
        ("hf", "fp32"), ("torch", "fp32"), ("ort", "fp32"), ("ort", "int8"), ("ort", "int8-cpu")}
    from toolkit.bench.records import COMMON_FIELDS as REQUIRED

    for r in records:
        assert all(k in r for k in REQUIRED), set(REQUIRED) - set(r)
        assert r["tokens_per_utterance"] == [6, 6]
        assert r["latency_ms_p50"] > 0 and r["rtf"] > 0 and r["peak_rss_mb"] > 50
        assert len(r["latency_ms_samples"]) == 2
        assert r["random_init"] is False and r["environment"]["threads"] >= 1
    by = {(r["backend"], r["precision"]): r for r in records}
    assert by[("ort", "fp32")]["cer_vs_torch_fp32"] == 0.0
    # PyTorch rows run the model itself; only onnxruntime rows name an exported artifact
    assert by[("torch", "fp32")]["artifact"] is None and by[("hf", "fp32")]["artifact"] is None
    assert by[("ort", "int8-cpu")]["artifact"].endswith("int8-cpu")
    assert by[("ort", "fp32")]["token_exact_match_vs_torch_fp32"] == 1.0
    # Hugging Face generate() with the same forced-length rules decodes the same tokens
    assert by[("hf", "fp32")]["token_exact_match_vs_torch_fp32"] == 1.0
    assert by[("ort", "fp32")]["top1_agreement_teacher_forced_vs_torch_fp32"] == 1.0
    assert 0.5 <= by[("ort", "int8")]["top1_agreement_teacher_forced_vs_torch_fp32"] <= 1.0
    assert by[("torch", "fp32")]["quality_metric"] == "cer_pp"  # bundled data has references
    assert (tmp_path / "bench.csv").read_text().startswith("model,")


def test_ort_without_artifact_exports_once_into_the_cache(ckpt, tmp_path, shared_data,
                                                          monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    args = ["transcribe", str(shared_data / "audio" / "jfk.flac"), "--checkpoint", str(ckpt),
            "--backend", "ort", "--language", "en", "--max-new-tokens", "6", "--json"]
    first = _ok(runner.invoke(app, args))
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and (cached[0] / "manifest.json").is_file()
    second = _ok(runner.invoke(app, args))
    assert "reusing" in second.stderr and "exporting" not in second.stderr
    tokens = [json.loads(r.stdout.strip().splitlines()[-1])["tokens"] for r in (first, second)]
    torch_run = _ok(runner.invoke(app, args[:5] + ["torch"] + args[6:]))
    assert tokens[0] == tokens[1] == json.loads(torch_run.stdout.strip().splitlines()[-1])["tokens"]


@pytest.mark.slow
def test_long_form_bench_runs_faster_whisper_beside_the_toolkit(tmp_path, shared_data):
    """`--long-form` joins the clips and seeks with timestamps on every backend; faster-whisper
    (ct2) runs the same recording with the same settings, in its own process, and the table
    gets its rows and ratios. Hugging Face generate() runs clips only: it is not a reference here."""
    out = tmp_path / "lf.json"
    _ok(runner.invoke(app, [
        "bench", "--model", "whisper", "--data", str(shared_data / "ljspeech-mini"),
        "--limit", "3", "--long-form", "--backend", "ort,ct2", "--precision", "fp32",
        "--runs", "1", "--warmup", "0", "--out", str(out), "--workdir", str(tmp_path / "w")]))
    records = json.loads(out.read_text())
    by = {(r["backend"], r["precision"]): r for r in records}
    assert set(by) == {("torch", "fp32"), ("ort", "fp32"), ("ct2", "fp32")}
    for r in records:
        assert r["mode"] == "long-form" and r["utterances"] == 1 and r["error"] is None
        assert r["cer_vs_reference"] < 8.0 and r["segments"] >= 2
        assert r["words_dropped"] <= 3 and isinstance(r["words_inserted"], int)
        assert r["speedup_vs_ct2_fp32"] > 0
    assert abs(by[("ort", "fp32")]["cer_vs_reference"] - by[("ct2", "fp32")]["cer_vs_reference"]) < 1.5
    assert by[("ort", "fp32")]["cer_vs_torch_fp32"] == 0.0


@pytest.mark.slow
def test_clip_bench_with_beams_on_every_backend(tmp_path):
    out = tmp_path / "beam.json"
    _ok(runner.invoke(app, [
        "bench", "--model", "whisper", "--backend", "ort,ct2", "--precision", "fp32",
        "--beam-size", "3", "--limit", "2", "--runs", "1", "--warmup", "0",
        "--out", str(out), "--workdir", str(tmp_path / "w")]))
    by = {r["backend"]: r for r in json.loads(out.read_text())}
    assert set(by) == {"torch", "hf", "ort", "ct2"}
    assert all(r["beam_size"] == 3 and r["mode"] == "clips" for r in by.values())
    assert by["ort"]["token_exact_match_vs_torch_fp32"] == 1.0
    assert by["ct2"]["cer_vs_reference"] < 10 and by["hf"]["cer_vs_reference"] < 10


def test_ct2_backend_needs_faster_whisper(monkeypatch):
    from toolkit.bench import whisper as wb
    from toolkit.core.errors import ToolkitError

    assert "ct2" in wb.SPEC.default_backends()            # installed here (dev extra)
    monkeypatch.setattr(wb, "faster_whisper_installed", lambda: False)
    with pytest.raises(ToolkitError, match=r"pip install 'toolkit\[peers\]'"):
        wb.SPEC.check_backends(["ort", "ct2"])
    assert "ct2" not in wb.SPEC.default_backends()
    fails_cleanly("bench", "--model", "whisper", "--backend", "ct2", "--beam-size", "0",
                  contains="--beam-size must be at least 1")
    fails_cleanly("bench", "--model", "whisper", "--long-form", "--tokens", "5",
                  contains="use one of them")
