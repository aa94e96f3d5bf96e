"""The HTTP API, on FastAPI (``toolkit serve``; the Ray Serve replicas mount the same app).

Shared routes: ``GET /health`` (200 once the models are loaded, 503 before), ``GET /metrics``
(Prometheus), ``GET /v1/models``. Each served family mounts its own router
(``serve/routes/<family>.py``: Whisper's OpenAI audio API, Grad-TTS's speech route, …). Errors
are OpenAI's shape, ``{"error": {"message", "type", "code"}}``, with a one-line message that
names the problem and the fix — an unknown path too.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from .http import Http, error_response


def create_app(service, *, api_key: str | None = None, manage: bool = True) -> FastAPI:
    """The app over ``service``; ``manage``: the app starts the service (its models load in
    the background) and stops it with the server (Ray replicas manage their own)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage:
            service.start()
        try:
            yield
        finally:
            if manage:
                service.stop()

    app = FastAPI(title="toolkit", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = service
    http = Http(service, api_key)
    _shared_routes(app, http)
    for served in service.families():
        app.include_router(served.router(http))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            routes = sorted({r for m in service.models.values() for r in m.routes})
            return error_response(404, f"nothing is served at {request.url.path}; this server "
                                       f"answers {', '.join(routes) or 'no model routes'}")
        if exc.status_code == 405:
            return error_response(405, f"{request.method} is not allowed on "
                                       f"{request.url.path}")
        return error_response(exc.status_code, str(exc.detail))

    return app


def _shared_routes(app: FastAPI, http: Http) -> None:
    service = http.service

    @app.get("/health")
    async def health():
        if service.failed:
            return error_response(503, "the models failed to load; the reason is in the "
                                       "server's log")
        if not service.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "models": service.describe()}

    @app.get("/metrics")
    async def prometheus(request: Request):
        if not http.authorized(request):
            return http.denied()
        service.update_gauges()
        return Response(http.metrics.render(), media_type=http.metrics.content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        if not http.authorized(request):
            return http.denied()
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "toolkit"}
                                           for name in service.model_names()]}
