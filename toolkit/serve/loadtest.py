"""``toolkit load-test``: concurrent clients against a running server, and what they saw.

Each of ``clients`` clients sends ``requests`` transcriptions one after another (the clips in
turn, each request with its own ``X-Client-Request-Id``). First every clip is sent once alone: its
text is what every later answer for that clip is compared with. Reported per client count:
requests, audio seconds per second of wall time (throughput), p50/p99 latency, the server's
mean batch size over the run (from ``/metrics``), and the checks that nothing was lost or
answered twice — every request answered 200 exactly once with its own id, and the server's
request counter moved by exactly the number sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import httpx
import numpy as np

from ..core.errors import ToolkitError
from ..core.progress import console
from ..models.whisper.audio import SAMPLE_RATE, load_audio

ROUTE = "/v1/audio/transcriptions"


@dataclass
class LoadResult:
    label: str
    clients: int
    requests: int
    ok: int
    errors: int
    lost: int                 # no answer, or an answer without its own id
    duplicated: int           # ids answered more than once
    same_text: int            # answers equal to the clip's text when sent alone
    audio_s: float
    wall_s: float
    throughput: float         # audio seconds transcribed per wall second
    p50_ms: float
    p99_ms: float
    mean_batch: float | None  # server side, over this run (None: not one process's view)
    counted: int | None       # the server's count of answered transcriptions in this run


def _metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
            if m:
                total += float(m.group(2))
    return total


async def _scrape(client: httpx.AsyncClient) -> dict:
    r = await client.get("/metrics")
    if r.status_code != 200:
        return {}
    t = r.text
    m = re.search(r'^toolkit_process\{id="([^"]*)"\}', t, re.M)
    return {"process": m.group(1) if m else None,
            "batch_sum": _metric(t, "toolkit_batch_size_sum", 'model="whisper"'),
            "batch_count": _metric(t, "toolkit_batch_size_count", 'model="whisper"'),
            "answered": _metric(t, "toolkit_requests_total", f'route="{ROUTE}"')}


async def _one(client, name, data, rid, model):
    t0 = time.perf_counter()
    r = await client.post(ROUTE, files={"file": (name, data, "application/octet-stream")},
                          data={"model": model}, headers={"X-Client-Request-Id": rid})
    ms = (time.perf_counter() - t0) * 1e3
    text = r.json().get("text") if r.status_code == 200 else None
    return r.status_code, r.headers.get("x-client-request-id"), text, ms


async def _run(url, clips, clients, requests, api_key, timeout, model, label, reference):
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout,
                                 limits=limits) as client:
        if not reference:                        # each clip alone, once: the expected texts
            for name, data, _ in clips:
                status, _, text, _ = await _one(client, name, data, uuid.uuid4().hex, model)
                if status != 200:
                    raise ToolkitError(f"the server answered {status} to {name} sent alone; "
                                       "check it with curl first")
                reference[name] = text
        before = await _scrape(client)
        sent: dict[str, str] = {}
        answers: list[tuple] = []

        async def user(c: int):
            for i in range(requests):
                name, data, _ = clips[(c + i) % len(clips)]
                rid = f"{c}-{i}-{uuid.uuid4().hex[:8]}"
                sent[rid] = name
                try:
                    answers.append((rid, name, *await _one(client, name, data, rid, model)))
                except httpx.HTTPError as exc:
                    answers.append((rid, name, type(exc).__name__, None, None, None))

        t0 = time.perf_counter()
        await asyncio.gather(*(user(c) for c in range(clients)))
        wall = time.perf_counter() - t0
        after = await _scrape(client)
    ok = [a for a in answers if a[2] == 200 and a[3] == a[0]]
    ids = [a[3] for a in answers if a[3]]
    seconds = {name: s for name, _, s in clips}
    lat = [a[5] for a in ok]
    batch = None
    if before and after and before["process"] != after["process"]:
        before = after = {}          # two Ray replicas answered: their counters do not subtract
    if before and after and after["batch_count"] > before["batch_count"]:
        batch = ((after["batch_sum"] - before["batch_sum"])
                 / (after["batch_count"] - before["batch_count"]))
    audio = sum(seconds[a[1]] for a in ok)
    return LoadResult(
        label, clients, len(sent), len(ok), sum(1 for a in answers if a[2] != 200),
        lost=len(sent) - len(ok), duplicated=len(ids) - len(set(ids)),
        same_text=sum(1 for a in ok if a[4] == reference[a[1]]),
        audio_s=round(audio, 2), wall_s=round(wall, 2), throughput=round(audio / wall, 2),
        p50_ms=round(float(np.percentile(lat, 50)), 1) if lat else float("nan"),
        p99_ms=round(float(np.percentile(lat, 99)), 1) if lat else float("nan"),
        mean_batch=None if batch is None else round(batch, 2),
        counted=None if not after else int(after["answered"] - before["answered"]))


def default_clips() -> list[Path]:
    """The LJSpeech clips shipped with the package (1.9–5.1 s)."""
    wavs = Path(str(resources.files("toolkit.assets"))) / "speech" / "wavs"
    return sorted(wavs.glob("LJ*.flac"))


def load_clips(paths: list[Path]) -> list[tuple[str, bytes, float]]:
    clips = []
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in (".wav", ".flac")) \
            if p.is_dir() else [p]
        for f in files:
            clips.append((f.name, f.read_bytes(), len(load_audio(f)) / SAMPLE_RATE))
    if not clips:
        raise ToolkitError(f"no .wav or .flac files in {', '.join(map(str, paths))}")
    return clips


def run_load(url: str, clips, clients: list[int], requests: int, label: str = "",
             api_key: str | None = None, timeout: float = 600.0, model: str = "whisper-1",
             out: Path | None = None) -> list[LoadResult]:
    reference: dict[str, str] = {}
    results = []
    for n in clients:
        console.print(f"[dim]{label}: {n} clients × {requests} requests…[/]")
        res = asyncio.run(_run(url.rstrip("/"), clips, n, requests, api_key, timeout, model,
                               label, reference))
        console.print(f"  {res.ok}/{res.requests} ok · {res.throughput} audio s/s · "
                      f"p50 {res.p50_ms:.0f} ms · p99 {res.p99_ms:.0f} ms · mean batch "
                      f"{res.mean_batch}")
        results.append(res)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(json.dumps(asdict(res)) + "\n")
    return results


def read_results(path: Path) -> list[LoadResult]:
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [LoadResult(**r) for r in rows]
    except (OSError, ValueError, TypeError) as exc:
        raise ToolkitError(f"cannot read load results from {path}: {exc}") from None
