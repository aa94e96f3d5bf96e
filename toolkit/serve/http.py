"""What every route shares: OpenAI-shaped errors, the API key, admission, counting, waiting.

A family's routes (``serve/routes/<family>.py``) get one ``Http`` and wrap each handler in
``guarded`` (admitted before its body is read, counted, 499 when its client goes away), answer
``refused`` first (key, loading), and wait on their work with ``wait`` (timeout → 504, a
disconnect cancels the work).
"""

from __future__ import annotations

import asyncio
import hmac
import time

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from .batching import QueueFull
from .metrics import Metrics
from .uploads import UploadError


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    kind = ("invalid_request_error" if status < 500 else "server_error")
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                   "code": status}}, status_code=status, headers=headers)


class Http:
    def __init__(self, service, api_key: str | None):
        self.service = service
        self.metrics: Metrics = service.metrics
        self.api_key = api_key

    # -- who may ask ------------------------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        if not self.api_key:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                                  self.api_key.encode())

    def denied(self) -> JSONResponse:
        return error_response(401, "missing or wrong API key: send 'Authorization: Bearer "
                                   "<key>' with the key the server was started with",
                              {"WWW-Authenticate": "Bearer"})

    def refused(self, request: Request) -> Response | None:
        """The answer to a request that cannot be served yet, if any (key, still loading)."""
        if not self.authorized(request):
            return self.denied()
        if not self.service.ready:
            return error_response(503, "the models are still loading; retry when GET /health "
                                       "answers 200", {"Retry-After": "5"})
        return None

    # -- admission and counting ---------------------------------------------------------------
    def busy(self) -> JSONResponse:
        retry = self.service.retry_after()
        return error_response(429, f"the server is busy ({self.service.admitted} requests in "
                                   f"progress); retry after {retry} s",
                              {"Retry-After": str(retry)})

    def queue_full(self, exc: QueueFull) -> JSONResponse:
        return error_response(429, f"the server is busy ({exc.depth} requests waiting); "
                                   f"retry after {exc.retry_after} s",
                              {"Retry-After": str(exc.retry_after)})

    def answered(self, route: str, response: Response, t0: float, request: Request) -> Response:
        rid = request.headers.get("x-client-request-id")
        if rid and len(rid) <= 128 and rid.isprintable():
            response.headers["x-client-request-id"] = rid   # echoed: clients match answers
        self.metrics.requests.labels(route, str(response.status_code)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
        if response.status_code >= 400:
            self.metrics.errors.labels(route, str(response.status_code)).inc()
        return response

    async def guarded(self, request: Request, route: str, handler) -> Response:
        """``handler()`` admitted (before its body is read, decoded or written anywhere),
        counted in flight, and answered 499 if its client goes away."""
        t0 = time.perf_counter()
        if not self.service.admit():
            return self.answered(route, self.busy(), t0, request)
        self.metrics.inflight.inc()
        try:
            return self.answered(route, await handler(), t0, request)
        except ClientDisconnect:
            self.metrics.requests.labels(route, "499").inc()
            self.metrics.errors.labels(route, "disconnect").inc()
            return Response(status_code=499)
        finally:
            self.metrics.inflight.dec()
            self.service.release()

    # -- waiting on the work ------------------------------------------------------------------
    async def wait(self, request: Request, future):
        """The result, or ``asyncio.TimeoutError`` past the server's timeout; a client that
        disconnects cancels its work (``ClientDisconnect``)."""
        waiter = asyncio.ensure_future(future)
        deadline = time.perf_counter() + self.service.timeout_s
        try:
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise asyncio.TimeoutError
                done, _ = await asyncio.wait({waiter}, timeout=min(left, 0.5))
                if done:
                    return waiter.result()
                if await request.is_disconnected():
                    raise ClientDisconnect
        finally:
            if not waiter.done():
                waiter.cancel()


async def small_body(request: Request, limit: int, what: str) -> bytes:
    """The whole body of a JSON request, refused (413) past ``limit`` bytes."""
    too_big = UploadError(413, f"the request body is over {limit // 1024} KiB; {what}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)
