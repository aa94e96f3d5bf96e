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

import uvicorn

from ..core.errors import ToolkitError
from ..core.options import check_number
from ..core.progress import console
from ..export.manifest import load_manifest
from .app import create_app
from .connections import HEADER_TIMEOUT_S, header_timeout_protocol
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
    """Every limit finite and in range, every model servable, the port free — before it opens."""
    for flag, value, low, high in (("--max-batch", settings.max_batch, 1, 1024),
                                   ("--max-queue", settings.max_queue, 1, 100_000),
                                   ("--max-wait-ms", settings.max_wait_ms, 0, 60_000),
                                   ("--max-upload-mb", settings.max_upload_mb, 0.001, 4096),
                                   ("--max-audio-s", settings.max_audio_s, 1, 86_400),
                                   ("--max-audio-total-s", settings.max_audio_total_s, 1,
                                    10 * 86_400),
                                   ("--timeout-s", settings.timeout_s, 0.1, 86_400),
                                   ("--port", port, 1, 65535)):
        check_number(flag, value, low, high, integer=isinstance(value, int))
    if settings.max_audio_total_s < settings.max_audio_s:
        raise ToolkitError(f"--max-audio-total-s ({settings.max_audio_total_s:g}) is below "
                           f"--max-audio-s ({settings.max_audio_s:g}): the longest allowed "
                           "recording could never be admitted; raise it")
    if not settings.models:
        raise ToolkitError("nothing to serve: give a model with --model FAMILY[=SOURCE] (or "
                           "--artifact/--checkpoint/--preset for Whisper)")
    for source in settings.models:
        if source.family.serve is None:
            raise ToolkitError(f"{source.family.name} has no serving routes; serve one of "
                               "the families that have")
        if source.artifact:
            if source.checkpoint or source.preset:
                raise ToolkitError("give either an artifact or a checkpoint/preset per model, "
                                   "not both")
            load_manifest(Path(source.artifact), source.family.name, verify_hashes=False)
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


def server_config(app, host: str, port: int, header_timeout_s: float,
                  connections: int) -> uvicorn.Config:
    """uvicorn's settings for ``toolkit serve``: headers within ``header_timeout_s``, idle
    keep-alive closed after 5 s, at most ``connections`` connections and requests in progress
    (503 past it), headers at most 64 KiB."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning",
                          timeout_graceful_shutdown=5,
                          http=header_timeout_protocol(header_timeout_s), timeout_keep_alive=5,
                          limit_concurrency=connections, h11_max_incomplete_event_size=64 * 1024)


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000,
        api_key_env: str | None = None, header_timeout_s: float = HEADER_TIMEOUT_S,
        max_connections: int | None = None) -> None:
    key = api_key_from_env(api_key_env)
    check_settings(settings, host, port)
    check_number("--header-timeout-s", header_timeout_s, 0.1, 3600)
    connections = max_connections or settings.max_queue + settings.max_batch + 64
    check_number("--max-connections", connections, 1, 100_000, integer=True)
    service = Service(settings)
    server = uvicorn.Server(server_config(create_app(service, api_key=key), host, port,
                                          header_timeout_s, connections))
    threading.Thread(target=_watch, args=(service, server, host, port), daemon=True).start()
    names = ", ".join(service.models)
    console.print(f"serving {names} on http://{host}:{port} (batching: up to "
                  f"{settings.max_batch} requests, {settings.max_wait_ms:g} ms wait; uploads up "
                  f"to {settings.max_upload_mb:g} MB; {'API key required' if key else 'no API key'}"
                  "); loading the models…")
    if not is_loopback(host):
        console.print(f"[yellow]note:[/] listening on {host}: other machines can reach this "
                      "server" + ("" if key else " — and no --api-key-env is set"))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    server.run()
    if service.failed:
        raise ToolkitError(f"the models failed to load: {service.failed}")


def _watch(service: Service, server, host: str, port: int) -> None:
    """Stop the server when its models cannot load; say where it answers once they have."""
    while not (service.ready or service.failed):
        if server.should_exit:
            return
        threading.Event().wait(0.2)
    if service.failed:
        server.should_exit = True
        return
    routes = sorted({r for m in service.models.values() for r in m.routes})
    console.print(f"[green]ready[/]: POST http://{host}:{port}{' · '.join(routes)}")
    for m in service.models.values():
        if m.pipe is not None and m.pipe.random_init:
            console.print(f"[yellow]note:[/] {m.name} has random-initialised weights (a "
                          "preset): its answers are meaningless (GET /health says random_init)")
