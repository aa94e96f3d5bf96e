"""Video decoding with PyAV: any container/codec FFmpeg reads, uniform frame sampling,
short-side resize + center crop, ImageNet normalisation → float32 ``[3, T, S, S]``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import av
import numpy as np

from ...core.errors import ToolkitError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv",
              ".wmv", ".3gp", ".ts")


class SampledFrames(Sequence):
    """The frames of a video at the indices that were asked for: ``len`` is the video's frame
    count, and only the kept frames are held in memory (indexing another one is a bug)."""

    def __init__(self, total: int, kept: dict[int, np.ndarray]):
        self.total, self.kept = total, kept

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i):
        return self.kept[int(i)]


def decode_frames(path: str | Path,
                  keep: Callable[[int], Iterable[int]] | None = None) -> Sequence[np.ndarray]:
    """The frames of the first video stream as RGB uint8 ``[H, W, 3]`` arrays.

    ``keep(frame_count)`` names the indices that will be used: when the container states its
    frame count, only those frames are converted and held (a long video no longer fills memory
    with every full-resolution frame); otherwise every frame is kept.
    """
    if keep is not None:
        total = _frame_count(path)
        if total > 0:
            wanted = {int(i) for i in keep(total)}
            kept: dict[int, np.ndarray] = {}
            n = _decode(path, lambda i, frame: kept.__setitem__(i, frame.to_ndarray(
                format="rgb24")) if i in wanted else None)
            if n == total:
                return SampledFrames(total, kept)
            # the stated count was wrong (a truncated file): fall back to keeping every frame
    frames: list[np.ndarray] = []
    _decode(path, lambda i, frame: frames.append(frame.to_ndarray(format="rgb24")))
    return frames


def _frame_count(path: str | Path) -> int:
    try:
        with av.open(str(path)) as c:
            return int(c.streams.video[0].frames or 0) if c.streams.video else 0
    except (av.error.FFmpegError, UnicodeDecodeError, OSError):
        return 0


def _decode(path: str | Path, take: Callable) -> int:
    """Decode every frame of the first video stream, calling ``take(index, frame)``; the number
    of frames decoded, with one-line errors for every way a file can fail."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"video {path} does not exist")
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as exc:
        if _looks_like_container(path):
            raise ToolkitError(f"{path} is a corrupt video container ({_why(exc)}); re-encode or "
                               "re-download it") from None
        raise ToolkitError(f"{path} is not a readable video ({_why(exc)}); pass an mp4/mkv/avi/"
                           "webm/mov file") from None
    with container:
        if not container.streams.video:
            raise ToolkitError(f"{path} has no video stream (it is "
                               f"{'audio only' if container.streams.audio else 'not a video'}); "
                               "pass a video file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                take(n, frame)
                n += 1
        except (av.error.FFmpegError, ValueError) as exc:
            if not n:
                raise ToolkitError(f"{path} is a corrupt video container ({_why(exc)}); "
                                   "re-encode or re-download it") from None
            # a truncated tail: keep what decoded cleanly
    if not n:
        raise ToolkitError(f"{path} is a corrupt or empty video: no frame could be decoded; "
                           "re-encode or re-download it")
    return n


def _looks_like_container(path: Path) -> bool:
    """Magic bytes of mp4/mov, Matroska/WebM, AVI, MPEG-TS/PS, FLV, Ogg."""
    head = path.open("rb").read(16)
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")
            or head.startswith((b"\x1aE\xdf\xa3", b"RIFF", b"\x00\x00\x01\xba", b"FLV", b"OggS"))
            or head[:1] == b"G")


def _why(exc: Exception) -> str:
    s = str(exc).strip().splitlines()
    return (s[0] if s else type(exc).__name__)[:160]


def sample_indices(n_available: int, n_frames: int, start: float = 0.0,
                   span: float = 1.0) -> np.ndarray:
    """``n_frames`` uniformly spaced indices (segment centres) in the window [start, start+span)."""
    lo = start * n_available
    width = span * n_available
    idx = lo + (np.arange(n_frames) + 0.5) * width / n_frames
    return np.clip(np.floor(idx).astype(np.int64), 0, n_available - 1)


def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of a bilinear (triangle) filter that widens with the downscale
    factor: the antialiased resize of PIL and of ``torch.nn.functional.interpolate(...,
    antialias=True)`` (align_corners=False), which the SVT weights were trained with."""
    scale = n_in / n_out
    width = max(scale, 1.0)
    centers = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    lo = np.clip((centers - width + 0.5).astype(np.int64), 0, n_in)
    hi = np.clip((centers + width + 0.5).astype(np.int64), 0, n_in)
    j = np.arange(n_in, dtype=np.float64)[None, :]
    w = np.clip(1.0 - np.abs((j - centers[:, None] + 0.5) / width), 0.0, None)
    w *= (j >= lo[:, None]) & (j < hi[:, None])
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_crop(frame: np.ndarray, size: int, crop: tuple[float, float, float] | None = None):
    """Short side → ``size`` then center crop ``size``×``size``. ``crop=(scale, cx, cy)`` first
    takes a square of ``scale``× the short side centred at relative (cx, cy) (augmentation).
    NumPy only, so that embedding from an artifact needs no PyTorch."""
    h, w = frame.shape[:2]
    if crop is not None:
        scale, cx, cy = crop
        side = max(2, int(min(h, w) * scale))
        x0 = int(np.clip(cx * w - side / 2, 0, w - side))
        y0 = int(np.clip(cy * h - side / 2, 0, h - side))
        frame = frame[y0:y0 + side, x0:x0 + side]
        h, w = frame.shape[:2]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    rows = _resize_weights(h, nh)[y0:y0 + size]  # only the kept rows and columns are computed
    cols = _resize_weights(w, nw)[x0:x0 + size]
    image = np.asarray(frame, dtype=np.float32)
    return np.einsum("yh,hwc,xw->yxc", rows, image, cols, optimize=True)


def normalise(frames_hwc: np.ndarray) -> np.ndarray:
    """``[T, S, S, 3]`` in 0..255 → ImageNet-normalised ``[3, T, S, S]`` float32."""
    x = (frames_hwc.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def clip_from_frames(frames: list[np.ndarray], n_frames: int, size: int, start: float = 0.0,
                     span: float = 1.0, crop=None, name: str = "video") -> np.ndarray:
    if n_frames < 1:
        raise ToolkitError(f"--frames must be at least 1 (got {n_frames})")
    if len(frames) < n_frames:
        raise ToolkitError(f"{name} has only {len(frames)} frames but {n_frames} were requested; "
                           f"use --frames {len(frames)} or fewer")
    idx = sample_indices(len(frames), n_frames, start, span)
    picked = np.stack([resize_crop(frames[i], size, crop) for i in idx])
    return normalise(picked)


def load_clip(path: str | Path, n_frames: int = 8, size: int = 224, patch: int = 16) -> np.ndarray:
    """Decode ``path`` and return one normalised clip ``[3, n_frames, size, size]``."""
    check_size(size, patch)
    if n_frames < 1:
        raise ToolkitError(f"--frames must be at least 1, got {n_frames}")
    frames = decode_frames(path)
    return clip_from_frames(frames, n_frames, size, name=str(path))


def check_size(size: int, patch: int = 16) -> None:
    if size < patch or size % patch:
        raise ToolkitError(f"size {size} px is not a multiple of the {patch}-px patch; use e.g. "
                           f"{max(patch, size // patch * patch)}")


def list_videos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ToolkitError(f"data folder {folder} does not exist; pass a folder of video files")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    if not files:
        raise ToolkitError(f"data folder {folder} holds no video files "
                           f"({', '.join(VIDEO_EXTS[:5])}, …); add clips or point --data elsewhere")
    return files


def write_synthetic_clip(path: str | Path, n_frames: int = 24, size: int = 64, seed: int = 0,
                         fps: int = 12) -> Path:
    """A short clip of coloured shapes moving on a textured background (H.264 in mp4, or
    mpeg4 if the build lacks libx264) — test data with real motion."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    bg = (rng.random((size, size, 3)) * 60 + 40).astype(np.uint8)
    shapes = [(rng.integers(0, size, 2).astype(float), rng.normal(0, 2.5, 2),
               rng.integers(60, 255, 3), int(rng.integers(size // 8, size // 4)))
              for _ in range(3)]
    container = av.open(str(path), mode="w")
    try:
        try:
            stream = container.add_stream("libx264", rate=fps)
        except Exception:  # noqa: BLE001 - codec missing in this FFmpeg build
            stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        yy, xx = np.mgrid[0:size, 0:size]
        for t in range(n_frames):
            img = bg.copy()
            for pos, vel, colour, r in shapes:
                c = (pos + vel * t) % size
                mask = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < r * r
                img[mask] = colour
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for pkt in stream.encode(frame):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)
    finally:
        container.close()
    return path


def default_video() -> Path:
    env = os.environ.get("TOOLKIT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return root / "video" / "demo.mp4"
