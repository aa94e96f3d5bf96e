"""``toolkit bench --model gradtts``: what is Grad-TTS-specific in the benchmark.

One shape per ODE step count. Every sentence is synthesized with identical noise and identical
durations (the fp32 PyTorch encoder's, fixed in the parent), so the mels of all backends are
directly comparable.

- acoustic RTF = (encoder + N U-Net steps + length regulation) wall time / audio duration,
  audio duration = frames × 256 / 22 050 s — what the paper reports;
- end-to-end RTF = acoustic + Griffin-Lim vocoder (32 iterations, same for every backend);
- step share of peak = U-Net FLOPs per step (torch's FLOP counter: convolutions and matmuls) /
  step time / the machine's fp32 peak (a 2048³ matmul timed in the same run);
- mel L1 / rel L2 / spectral distortion = final mel vs fp32 PyTorch on identical noise.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..core.errors import ToolkitError
from ..core.parity import rel_l2
from ..core.progress import step
from ..models.gradtts.constants import fix_len
from ..models.gradtts.data import read_metadata
from ..models.gradtts.sampler import frames_to_seconds, make_noise
from ..models.gradtts.sentences import SENTENCES
from ..models.gradtts.vocoder import VOCODER, griffin_lim
from .harness import BenchSpec, Workload
from .peak import measured_peak_gflops
from .plots import Panel
from .records import percentile_fields
from .timing import percentiles

DEFAULT_STEPS = (10,)
TEMPERATURE = 1.5


def spectral_distortion_db(mel: np.ndarray, ref: np.ndarray) -> float:
    """Spectral distortion (dB) between two natural-log mel spectrograms (n_mels, frames):
    per frame the RMS over bins of 20·log10 magnitude differences, averaged over frames."""
    db = (20.0 / np.log(10.0)) * (np.asarray(mel, np.float64) - np.asarray(ref, np.float64))
    return float(np.mean(np.sqrt(np.mean(db ** 2, axis=0)))) if db.size else 0.0


def unet_gflop(model, frames: int) -> float:
    """FLOPs (multiply-add = 2) of one U-Net evaluation at ``frames`` padded frames."""
    n = model.config.n_feats
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.decoder(torch.zeros(1, n, frames), torch.ones(1, 1, frames),
                      torch.zeros(1, n, frames), torch.tensor([0.5]))
    return fc.get_total_flops() / 1e9


class GradTTSBench(BenchSpec):
    family = "gradtts"
    fields = ("steps", "sentences", "frames_mean", "audio_s_total", "rtf_e2e",
              *percentile_fields("step_latency_ms"), "step_latency_ms_samples",
              *percentile_fields("encoder_latency_ms"),
              "vocoder", "vocoder_ms_mean", "unet_gflop_per_step_mean", "unet_gflops_achieved",
              "peak_gflops_fp32", "step_share_of_peak", "mel_l1", "spectral_distortion_db")
    columns = (("step p50 ms", "step_latency_ms_p50", ".1f"),
               ("step p90", "step_latency_ms_p90", ".1f"), ("RTF e2e", "rtf_e2e", ".3f"),
               ("% peak", "step_share_of_peak", ".1%"))
    quality_header = "mel rel L2"
    quality_format = ".2e"
    quality_columns = (("mel L1", "mel_l1", ".2e"), ("SD dB", "spectral_distortion_db", ".3f"))
    plot_panels = (Panel("rtf", "acoustic RTF", log=True), Panel("quality_value",
                                                                  "mel rel L2 vs torch fp32"))
    plot_x = "steps"
    default_out = "results/gradtts-bench.json"

    def check_options(self, options: dict) -> dict:
        steps = []
        for s in options.get("steps") or DEFAULT_STEPS:
            try:
                n = int(s)
            except (TypeError, ValueError):
                raise ToolkitError(f"--steps takes a comma list of integers, e.g. 1,4,10 "
                                   f"(got {s!r})") from None
            if n < 1:
                raise ToolkitError(f"--steps must be at least 1 (got {n})")
            steps.append(n)
        return {"steps": steps}

    def workloads(self, family, loaded, data, limit, options):
        texts = [t for _, t in read_metadata(data)] if data is not None else list(SENTENCES)
        texts = texts[:limit] if limit else texts
        with step("fp32 PyTorch reference durations"):
            ref = family.open_pipeline(loaded=loaded, backend="torch")
            durations = [ref.encode(t)[2].tolist() for t in texts]
            ref.close()
        frames = [int(sum(d)) for d in durations]
        audio_s = [frames_to_seconds(f) for f in frames]
        gflop = [unet_gflop(loaded.model, fix_len(f)) for f in frames]
        with step("vocoder (Griffin-Lim) timing"):
            voc_ms = []
            for f in frames:
                t0 = time.perf_counter()
                griffin_lim(np.zeros((80, f), dtype=np.float32) - 5.0)
                voc_ms.append((time.perf_counter() - t0) * 1e3)
        with step("measuring the machine's fp32 peak (2048³ matmul)"):
            peak = measured_peak_gflops()
        seed = loaded.seed
        items = [{"text": t, "durations": d, "noise_seed": seed + k}
                 for k, (t, d) in enumerate(zip(texts, durations))]
        info = {"audio_s": audio_s, "gflop": gflop, "voc_ms": voc_ms, "peak": peak}
        return [Workload(label=f"{n} step{'s' if n != 1 else ''}", items=items,
                      fields={"steps": n, "sentences": len(texts),
                              "frames_mean": float(np.mean(frames)),
                              "audio_s_total": float(sum(audio_s))},
                      info={**info, "steps": n}) for n in options["steps"]]

    def load_items(self, shape, case):
        return [{**it, "noise": make_noise(int(sum(it["durations"])), 80, it["noise_seed"])}
                for it in shape.items]

    def work(self, runner, item, shape, case):
        syn = runner.synthesize(item["text"], steps=shape.info["steps"], temperature=TEMPERATURE,
                                noise=item["noise"], durations=np.asarray(item["durations"]))
        return syn.mel, {"step_ms": syn.step_ms, "encoder_ms": [syn.encoder_ms]}

    def figures(self, shape, result, reference, options):
        info, n = shape.info, shape.info["steps"]
        mels, ref_mels = result["outputs"], reference["outputs"]
        per_item = np.asarray(result["samples"])            # items × runs, ms
        audio = np.asarray(info["audio_s"])[:, None]
        voc = np.asarray(info["voc_ms"])[:, None]
        runs = per_item.shape[1]
        step_ms = np.asarray(result["extras"]["step_ms"])
        flop_rate = sum(g * n * runs for g in info["gflop"]) / (step_ms.sum() / 1e3)
        return {
            "rtf": float(np.median(per_item / 1e3 / audio)),
            "rtf_e2e": float(np.median((per_item + voc) / 1e3 / audio)),
            **percentiles(step_ms, prefix="step_latency_ms"),
            "step_latency_ms_samples": [round(x, 3) for x in step_ms.tolist()],
            **percentiles(result["extras"]["encoder_ms"], prefix="encoder_latency_ms"),
            "vocoder": VOCODER, "vocoder_ms_mean": float(np.mean(info["voc_ms"])),
            "unet_gflop_per_step_mean": float(np.mean(info["gflop"])),
            "unet_gflops_achieved": float(flop_rate), "peak_gflops_fp32": float(info["peak"]),
            "step_share_of_peak": float(flop_rate / info["peak"]),
            "quality_metric": "mel_rel_l2",
            "quality_value": float(max(rel_l2(m, r) for m, r in zip(mels, ref_mels))),
            "mel_l1": float(np.mean([np.mean(np.abs(m - r)) for m, r in zip(mels, ref_mels)])),
            "spectral_distortion_db": float(np.mean([spectral_distortion_db(m, r)
                                                     for m, r in zip(mels, ref_mels)])),
            "quality_reference": "torch fp32, identical noise, durations and temperature "
                                 f"{TEMPERATURE}",
        }

    def notes(self, records, loaded, shapes, options, env):
        info = shapes[0].info
        return [
            *([f"RANDOM INIT: {loaded.weights} — speed is real, the audio is not speech."]
              if loaded.random_init else [f"weights: {loaded.weights}"]),
            "RTF = (encoder + N U-Net steps) / audio duration (frames×256/22050 s), median over "
            "utterances × runs — the paper's acoustic RTF (GPU: 0.033 @10 steps, 0.363 @100).",
            f"RTF e2e adds the {VOCODER} vocoder (32 iterations, CPU, "
            f"{np.mean(info['voc_ms']):.0f} ms mean per utterance, the same for every backend).",
            f"% peak = U-Net FLOPs per step (torch FLOP counter, {np.mean(info['gflop']):.2f} "
            f"GFLOP mean) / step time / measured fp32 peak {info['peak']:.1f} GFLOP/s (2048³ "
            "matmul, this run).",
            "mel rel L2 / L1: final mel vs torch fp32 on identical noise, durations, temperature "
            f"{TEMPERATURE} (worst sentence / mean). SD = spectral distortion of the final "
            "log-mel vs torch fp32: per frame the RMS over mel bins of 20·log10 magnitude "
            "differences, averaged over frames and sentences (dB; meaningful for trained "
            "checkpoints).",
        ]


SPEC = GradTTSBench()
