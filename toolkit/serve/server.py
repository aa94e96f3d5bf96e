"""``toolkit serve``: check the options, bind, load the models in the background, serve.

Everything a user can get wrong is refused in one line before the port opens: the API key's
environment variable, a port in use, limits out of range, a missing artifact. Models that
fail to load stop the server with their one-line error (``/health`` answers 503 until they
are in).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path

from ..core.errors import ToolkitError, check_positive
from ..core.progress import console
from ..export.manifest import load_manifest
from .app import create_app
from .service import Service, Settings

log = logging.getLogger("toolkit.serve")


def api_key_from_env(var: str | None) -> str | None:
    if var is None:
        return None
    key = os.environ.get(var, "")
    if not key.strip():
        raise ToolkitError(f"--api-key-env {var}: the environment variable {var} is not set or "
                           f"empty; export {var}=<secret> before starting the server")
    return key.strip()


def check_settings(settings: Settings, host: str, port: int) -> None:
    check_positive(max_batch=settings.max_batch, max_queue=settings.max_queue,
                   beam_size=settings.beam_size, best_of=settings.best_of)
    if settings.max_wait_ms < 0:
        raise ToolkitError(f"--max-wait-ms must be 0 or more (got {settings.max_wait_ms:g})")
    if not 0 < settings.max_upload_mb <= 4096:
        raise ToolkitError(f"--max-upload-mb must be above 0 and at most 4096 (got "
                           f"{settings.max_upload_mb:g})")
    if settings.max_audio_s <= 0:
        raise ToolkitError(f"--max-audio-s must be above 0 (got {settings.max_audio_s:g})")
    if settings.timeout_s <= 0:
        raise ToolkitError(f"--timeout-s must be above 0 (got {settings.timeout_s:g})")
    if not 0 < port < 65536:
        raise ToolkitError(f"--port must be from 1 to 65535 (got {port})")
    for source, family in ((settings.whisper, "whisper"), (settings.tts, "gradtts")):
        if source is not None and source.artifact:
            if source.checkpoint or source.preset:
                raise ToolkitError("give either an artifact or a checkpoint/preset per model, "
                                   "not both")
            load_manifest(Path(source.artifact), family, verify_hashes=False)   # cheap check
    if settings.whisper is None and settings.tts is None:
        raise ToolkitError("nothing to serve: give a Whisper model, a Grad-TTS model, or both")
    check_port(host, port)


def check_port(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ToolkitError(f"--host {host!r} is not an address of this machine; use 127.0.0.1 "
                           "(this machine only) or 0.0.0.0 (every interface)") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            raise ToolkitError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another "
                               "--port or stop what uses it") from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000,
        api_key_env: str | None = None) -> None:
    import uvicorn                                # optional: the [serve] extra

    key = api_key_from_env(api_key_env)
    check_settings(settings, host, port)
    service = Service(settings)
    app = create_app(service, api_key=key)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))

    def watch() -> None:              # stop the server when its models cannot load
        while not (service.ready or service.failed):
            if server.should_exit:
                return
            threading.Event().wait(0.2)
        if service.failed:
            server.should_exit = True
        else:
            routes = ((["/v1/audio/transcriptions", "/v1/audio/translations"]
                       if service.whisper else []) + (["/v1/audio/speech"] if service.tts else []))
            console.print(f"[green]ready[/]: POST http://{host}:{port}{' · '.join(routes)}")
            for name, pipe in ((service.whisper_name, service.whisper),
                               (service.tts_name, service.tts)):
                if pipe is not None and pipe.random_init:
                    console.print(f"[yellow]note:[/] {name} has random-initialised weights "
                                  "(a preset): its answers are meaningless (GET /health says "
                                  "random_init)")
    threading.Thread(target=watch, daemon=True).start()
    where = f"http://{host}:{port}"
    console.print(f"serving {', '.join(n for n in (service.whisper_name, service.tts_name) if n)}"
                  f" on {where} (batching: up to {settings.max_batch} requests, "
                  f"{settings.max_wait_ms:g} ms wait; uploads up to {settings.max_upload_mb:g} "
                  f"MB; {'API key required' if key else 'no API key'}); loading the models…")
    if not is_loopback(host):
        console.print(f"[yellow]note:[/] listening on {host}: other machines can reach this "
                      "server" + ("" if key else " — and no --api-key-env is set"))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    server.run()
    if service.failed:
        raise ToolkitError(f"the models failed to load: {service.failed}")
