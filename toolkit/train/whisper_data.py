"""Whisper training data as a stream: clips listed once, decoded and turned into features in
``DataLoader`` worker processes, a batch at a time, in length-grouped batches.

- ``index_clips``: the clips of a folder (``models/whisper/data.py``'s three layouts) with their
  durations read from the file headers (no audio decoded): paths, transcripts and a float32
  array of seconds — a few hundred bytes per clip, nothing else grows with the data;
- ``GroupedBatches``: the batch sampler. Every epoch is a permutation seeded by (seed, epoch);
  with length grouping it is cut into chunks of ``group`` global batches, each chunk sorted by
  duration and cut into global batches (so clips of similar length meet), and the batches are
  shuffled. A *global* batch (``batch × world`` clips) is the same whatever the number of
  processes; rank ``r`` takes its ``r``-th part. The stream runs on over epochs; its position
  is ``(epoch, batch)``, so a resumed run regenerates the same order and starts where it was;
- ``Clips``: the map-style dataset the workers call: decode (like ``transcribe``), skip
  unreadable, silent or over-long clips (reported with a count, never fatal), tokenise, log-mel
  (SpecAugment seeded by (seed, epoch, clip), so it does not depend on which worker or which
  run computes it); ``collate`` pads the labels and counts what was skipped.

Why not ``DistributedSampler`` or transformers' ``LengthGroupedSampler``: neither keeps a
position to resume from mid-epoch, and neither makes the batches of N processes the parts of
the batches one process sees — which is what lets a 2-process run repeat a 1-process run.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.audio import TooLong
from ..core.errors import ToolkitError
from ..core.files import atomic_write_bytes
from ..core.memory import high_water_bytes
from ..models.whisper.audio import (
    CHUNK_SECONDS,
    HOP_LENGTH,
    N_FFT,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    load_audio,
    log_mel,
)

MASK_WIDTH, N_MASKS = 30, 2
UNREADABLE, TOO_LONG = "unreadable or silent", "longer than 30 s (cut them into ≤ 30-s clips)"


@dataclass
class ClipIndex:
    """The clips of one folder: what the sampler and the workers need, nothing decoded."""

    paths: list[str]
    texts: list[str]
    seconds: np.ndarray         # float32, from the headers (0 where a header cannot be read)

    def __len__(self) -> int:
        return len(self.paths)

    def digest(self) -> str:
        """Names, transcripts and durations: a resumed run must see the same data."""
        h = hashlib.sha256()
        for p, t in zip(self.paths, self.texts):
            h.update(Path(p).name.encode() + b"\0" + t.encode() + b"\0")
        h.update(np.round(self.seconds, 2).astype(np.float32).tobytes())
        return h.hexdigest()[:16]

    def subset(self, idx) -> "ClipIndex":
        idx = list(idx)
        return ClipIndex([self.paths[i] for i in idx], [self.texts[i] for i in idx],
                         self.seconds[idx])


def clip_seconds(path: str | Path) -> float:
    """The duration from the file's header (libsndfile, else FFmpeg); 0.0 when unreadable (the
    worker then skips the clip with a count, as for any other unreadable file)."""
    try:
        import soundfile as sf

        info = sf.info(str(path))
        return float(info.frames) / float(info.samplerate)
    except Exception:  # noqa: BLE001 - not a libsndfile container, or broken: try FFmpeg
        pass
    try:
        import av

        with av.open(str(path)) as c:
            return float(c.duration or 0) / 1e6
    except Exception:  # noqa: BLE001 - broken: the worker skips it
        return 0.0


def index_clips(items) -> ClipIndex:
    """``Utterance`` items (path + transcript) → a ``ClipIndex``; headers only."""
    return ClipIndex([str(u.path) for u in items], [u.text or "" for u in items],
                     np.array([clip_seconds(u.path) for u in items], np.float32))


# -- the sampler ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchStart:
    """The first key of every batch the sampler yields: where the batch sits in the stream."""

    epoch: int
    number: int          # the batch's position in its epoch
    of: int              # batches in the epoch


class GroupedBatches:
    """An endless stream of this rank's part of each global batch, from ``start`` on."""

    def __init__(self, seconds: np.ndarray, batch: int, world: int = 1, rank: int = 0,
                 seed: int = 0, group_by_length: bool = True, group: int = 50,
                 start: tuple[int, int] = (0, 0)):
        self.seconds = np.asarray(seconds, np.float32)
        self.global_batch = batch * world
        self.world, self.rank, self.seed = world, rank, seed
        self.group_by_length, self.group = group_by_length, group
        self.start = start

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.seconds) // self.global_batch)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of ``epoch`` (clip indices), the same on every rank."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.seconds))
        g = self.global_batch
        if not self.group_by_length:
            return [order[i:i + g] for i in range(0, len(order), g)]
        batches = []
        chunk = g * self.group
        for c in range(0, len(order), chunk):
            part = order[c:c + chunk]
            part = part[np.argsort(-self.seconds[part], kind="stable")]   # longest first
            batches += [part[i:i + g] for i in range(0, len(part), g)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def part(self, batch: np.ndarray) -> np.ndarray:
        """This rank's clips of a global batch (parts differ in size by at most one)."""
        return np.array_split(batch, self.world)[self.rank]

    def __iter__(self):
        epoch, first = self.start
        while True:
            batches = self.epoch_batches(epoch)
            for n in range(first, len(batches)):
                head = BatchStart(epoch, n, len(batches))
                yield [head] + [(epoch, int(i)) for i in self.part(batches[n])]
            epoch, first = epoch + 1, 0


# -- the feature cache ------------------------------------------------------------------------

class FeatureCache:
    """``--feature-cache DIR``: each clip's log-mel on disk, made once and read back in later
    epochs and runs instead of decoding the audio and computing it again.

    - key: the SHA-256 of the audio file's bytes, under a folder named by the model's mel
      settings (bins, sample rate, FFT size, hop, frames, this format's version), so another
      model's bins or a changed file never read a stale entry;
    - format: one NumPy ``.npy`` per clip holding one record of a plain structured dtype (the
      clip's sample count and its float32 ``n_mels × 3000`` features), read with
      ``allow_pickle=False`` — nothing is ever unpickled; a file that does not parse or has
      another dtype or shape is recomputed and replaced;
    - writes: to a temporary sibling renamed into place (workers of several processes may
      write the same clip; either copy is whole);
    - size: ``plan`` states it before anything is written (``bytes_per_clip`` each)."""

    VERSION = 1

    def __init__(self, directory: str | Path, n_mels: int):
        self.root = Path(directory).expanduser()
        self.n_mels = n_mels
        self.dir = self.root / (f"mel{n_mels}-sr{SAMPLE_RATE}-fft{N_FFT}-hop{HOP_LENGTH}-"
                                f"frames{N_FRAMES}-v{self.VERSION}")
        self.dtype = np.dtype([("samples", "<i8"), ("feats", "<f4", (n_mels, N_FRAMES))])

    @property
    def bytes_per_clip(self) -> int:
        return self.dtype.itemsize + 128          # + the .npy header

    @staticmethod
    def key(path: str | Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def file(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def cached(self) -> int:
        return sum(1 for _ in self.dir.glob("??/*.npy")) if self.dir.is_dir() else 0

    def plan(self, clips: int) -> str:
        """What the cache will hold, said before it is written (and a warning when the disk
        has less room than that)."""
        need = clips * self.bytes_per_clip
        have = self.cached()
        self.dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.dir).free
        from rich.markup import escape

        text = (f"feature cache {escape(str(self.dir))}: {clips} clips × "
                f"{self.bytes_per_clip / 1e6:.2f} MB "
                f"(float32 {self.n_mels} × {N_FRAMES}) = {need / 1e9:.2f} GB at most, "
                f"{have} clip(s) cached already, {free / 1e9:.1f} GB free")
        if need - have * self.bytes_per_clip > free:
            text += " — [yellow]warning:[/] not enough room; the clips that do not fit are " \
                    "recomputed every epoch"
        return text

    def get(self, key: str) -> tuple[np.ndarray, int] | None:
        try:
            rec = np.load(self.file(key), allow_pickle=False)
        except (OSError, ValueError, EOFError):    # missing, cut short, not .npy, or pickled
            return None
        if rec.dtype != self.dtype or rec.shape != ():
            return None
        return np.array(rec["feats"]), int(rec["samples"])

    def put(self, key: str, feats: np.ndarray, samples: int) -> None:
        rec = np.zeros((), self.dtype)
        rec["feats"], rec["samples"] = feats, samples
        buf = io.BytesIO()
        np.save(buf, rec, allow_pickle=False)
        target = self.file(key)
        try:
            os.makedirs(target.parent, exist_ok=True)
            atomic_write_bytes(target, buf.getvalue())
        except (OSError, ToolkitError):       # a full or read-only disk: train on, uncached
            pass


# -- the dataset and its batches --------------------------------------------------------------

@dataclass
class Sample:
    clip: int
    feats: np.ndarray
    tokens: list[int]
    seconds: float
    cut: bool


@dataclass
class Skipped:
    clip: int
    name: str
    reason: str


@dataclass
class Batch:
    """One micro-batch of one rank, with what the stream learned making it."""

    epoch: int
    number: int
    of: int
    feats: torch.Tensor | None           # [n, n_mels, 3000] (None: every clip was skipped)
    ids: torch.Tensor | None
    labels: torch.Tensor | None
    clips: list[int] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (file name, reason)
    cut: int = 0
    worker_rss: int = 0

    @property
    def n_tokens(self) -> int:
        return 0 if self.labels is None else int((self.labels != -100).sum())


def spec_augment(feats: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Two time masks (≤ 30 frames, within the first ``frames`` frames: the speech) and two
    frequency masks (≤ 30 bins), filled with the example's mean."""
    feats = feats.copy()
    fill = float(feats[:, : max(1, frames)].mean())
    n_mels = feats.shape[0]
    for _ in range(N_MASKS):
        w = int(rng.integers(0, MASK_WIDTH + 1))
        if frames > w:
            t0 = int(rng.integers(0, frames - w))
            feats[:, t0 : t0 + w] = fill
        w = int(rng.integers(0, min(MASK_WIDTH, n_mels // 2) + 1))
        f0 = int(rng.integers(0, n_mels - w + 1))
        feats[f0 : f0 + w, :] = fill
    return feats


def token_batch(seqs: list[list[int]], prompt_len: int, eot: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs (padded with end-of-text) and labels: position j predicts token j + 1;
    the prompt (but its last token's target) and the padding are masked with -100."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), eot, np.int64)
    labels = np.full((len(seqs), width), -100, np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        labels[i, : len(s)] = s[1:] + [eot]
        labels[i, : prompt_len - 1] = -100
    return torch.from_numpy(ids), torch.from_numpy(labels)


class Clips(torch.utils.data.Dataset):
    """``dataset[(epoch, clip)]`` → a ``Sample`` (features + tokens) or a ``Skipped``."""

    def __init__(self, index: ClipIndex, tokenizer, prompt: list[int], n_mels: int,
                 max_positions: int, augment: bool = False, seed: int = 0,
                 cache: FeatureCache | None = None):
        self.index, self.tok, self.prompt = index, tokenizer, list(prompt)
        self.n_mels, self.augment, self.seed = n_mels, augment, seed
        self.cache = cache
        self.limit = max_positions - len(self.prompt) - 1

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        if isinstance(key, BatchStart):
            return key
        epoch, i = key
        path = self.index.paths[i]
        got = self._features(path)
        if isinstance(got, str):
            return Skipped(i, Path(path).name, got)
        feats, samples = got
        tokens = self.tok.encode(" " + self.index.texts[i].strip())
        cut = len(tokens) > self.limit
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, i, 1])
            feats = spec_augment(feats, samples // HOP_LENGTH, rng)
        return Sample(i, feats, tokens[: self.limit], samples / 16000.0, cut)

    def _features(self, path: str) -> tuple[np.ndarray, int] | str:
        """The clip's log-mel and sample count (from the cache when it holds them), or why it
        is skipped."""
        key = None
        if self.cache is not None:
            try:
                key = self.cache.key(path)
            except OSError:
                return UNREADABLE
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        try:
            audio = load_audio(path, max_seconds=CHUNK_SECONDS + 0.5)
        except TooLong:
            return TOO_LONG
        except ToolkitError:
            return UNREADABLE
        if len(audio) > N_SAMPLES:
            return TOO_LONG
        feats = log_mel(audio, self.n_mels)
        if key is not None:
            self.cache.put(key, feats, len(audio))
        return feats, len(audio)

    def collate(self, items: list) -> Batch:
        head, rest = items[0], items[1:]
        good = [s for s in rest if isinstance(s, Sample)]
        out = Batch(head.epoch, head.number, head.of, None, None, None,
                    skipped=[(s.name, s.reason) for s in rest if isinstance(s, Skipped)],
                    worker_rss=high_water_bytes() if torch.utils.data.get_worker_info() else 0)
        if good:
            out.feats = torch.from_numpy(np.stack([s.feats for s in good]))
            out.ids, out.labels = token_batch([self.prompt + s.tokens for s in good],
                                              len(self.prompt), self.tok.eot)
            out.clips = [s.clip for s in good]
            out.seconds = float(sum(s.seconds for s in good))
            out.cut = sum(s.cut for s in good)
        return out


def _worker_init(_worker_id: int) -> None:
    """One thread per worker: the workers share the cores with the training processes."""
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


def loader(clips: Clips, sampler: GroupedBatches, workers: int) -> torch.utils.data.DataLoader:
    """The stream: ``workers`` processes decode and make features ahead of the training loop
    (two batches each); 0 makes them in the training process."""
    return torch.utils.data.DataLoader(
        clips, batch_sampler=sampler, num_workers=workers, collate_fn=clips.collate,
        worker_init_fn=_worker_init if workers else None, persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None)
