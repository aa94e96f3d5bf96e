"""Issue 23: peak server memory while N clients each upload a small compressed file of hours.

Makes a FLAC of HOURS h at 48 kHz (jfk.flac's speech, then digital silence: FLAC stores it in a
few bytes per frame, so the file stays small), starts `toolkit serve` with the given options,
has N clients post it at once, and prints the answers' status codes, the server's peak RSS
(VmHWM) and its RSS at start-up.

    .venv/bin/python results/serving/hostile_uploads.py --clients 16 --hours 2.9 -- --artifact A
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
JFK = ROOT.parent / "shared" / "data" / "audio" / "jfk.flac"


def make_file(path: Path, hours: float, rate: int = 48000) -> None:
    speech, sr = sf.read(JFK, dtype="float32", always_2d=True)
    speech = speech.mean(axis=1)
    speech = np.interp(np.arange(0, len(speech), sr / rate), np.arange(len(speech)), speech)
    total, block = int(hours * 3600 * rate), rate * 60
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, format="FLAC") as f:
        f.write(speech.astype(np.float32))
        zeros = np.zeros(block, np.float32)
        for start in range(len(speech), total, block):
            f.write(zeros[: min(block, total - start)])


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) // 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--hours", type=float, default=2.9)
    ap.add_argument("--port", type=int, default=8131)
    ap.add_argument("serve_args", nargs="*")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        upload = Path(tmp) / "hours.flac"
        t = time.perf_counter()
        make_file(upload, a.hours)
        print(f"upload: {a.hours} h at 48 kHz FLAC, {upload.stat().st_size / 1e6:.2f} MB "
              f"(made in {time.perf_counter() - t:.0f} s)", flush=True)
        server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "toolkit"), "serve", "--port",
                                   str(a.port), *a.serve_args], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{a.port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            start = status(server.pid)
            print(f"server RSS after start-up: {start['VmRSS']} MB", flush=True)
            data = upload.read_bytes()

            def post(i: int):
                t0 = time.perf_counter()
                try:
                    r = httpx.post(f"{url}/v1/audio/transcriptions", timeout=900,
                                   files={"file": ("hours.flac", data)},
                                   data={"model": "whisper-1"})
                    return r.status_code, time.perf_counter() - t0, r.text[:120]
                except httpx.HTTPError as exc:
                    return type(exc).__name__, time.perf_counter() - t0, ""

            samples, done = [], False

            def sample():                       # the server's RSS over time: when is the peak
                t0 = time.perf_counter()
                while not done:
                    samples.append((time.perf_counter() - t0, status(server.pid)["VmRSS"]))
                    time.sleep(0.5)

            sampler = cf.ThreadPoolExecutor(1)
            sampler.submit(sample)
            with cf.ThreadPoolExecutor(a.clients) as pool:
                results = list(pool.map(post, range(a.clients)))
            done = True
            sampler.shutdown()
            end = status(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    print("answers:", dict(Counter(r[0] for r in results)))
    for code, text in {r[0]: r[2] for r in results}.items():
        print(f"  {code}: {text!r}")
    print(f"slowest answer {max(r[1] for r in results):.0f} s; the 429s within "
          f"{max((r[1] for r in results if r[0] == 429), default=0):.0f} s")
    t_peak, peak = max(samples, key=lambda x: x[1])
    at = [next((m for t, m in samples if t >= x), 0) for x in (30, 60, 120, 240)]
    print(f"RSS peak {peak} MB at {t_peak:.0f} s; RSS at 30/60/120/240 s: "
          + ", ".join(f"{m} MB" for m in at))
    print(f"server peak RSS (VmHWM) {end['VmHWM']} MB; RSS at the end {end['VmRSS']} MB; "
          f"at start-up {start['VmRSS']} MB")


if __name__ == "__main__":
    sys.exit(main())
