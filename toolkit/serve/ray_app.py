"""``toolkit serve --engine ray``: the same app and pipelines as Ray Serve deployments.

Each replica is a Ray actor that loads the models once and mounts the same FastAPI app as
``toolkit serve`` (built in the replica, ``__serve_build_asgi_app__``); requests reach the
pipeline through Ray's ``@serve.batch`` (``max_batch_size`` = ``--max-batch``,
``batch_wait_timeout_s`` = ``--max-wait-ms``), whose batches go into the replica's continuous
batcher (``RayService``: one worker thread per model, so a session never runs two batches).
Ray's proxy spreads requests over ``--replicas`` (or Ray's
autoscaling, ``--autoscaling '{...}'``); ``--max-queue`` is Ray's ``max_queued_requests``.
On a cluster, ``--ray-address`` joins it and ``--gpus-per-replica`` places replicas on GPUs:
a fleet grows by adding Ray nodes.

``ray`` is optional (``pip install 'ray[serve]'``) and imported only here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time

from ..core.errors import MissingDependency, ToolkitError
from ..core.options import check_number
from ..core.progress import console
from .app import create_app
from .batching import QueueFull
from .server import api_key_from_env, check_settings, is_loopback
from .service import Service, Settings

log = logging.getLogger("toolkit.serve")


class RayService(Service):
    """A replica's models. Requests come in through the replica's ``@serve.batch`` methods,
    which hand each batch to the replica's own continuous batcher (``Service``'s, one worker
    thread over the sessions).

    Why not run each ``@serve.batch`` batch to its end: Ray forms a batch as soon as its first
    request has waited ``batch_wait_timeout_s``, even while the replica is still busy with the
    previous one, so on a loaded replica its batches hold only what arrived within those
    milliseconds (measured: a mean batch of 1.18 requests at 16 clients, and no more
    throughput than one at a time). Handed to the batcher, they join the windows in flight."""

    replica = None                          # set by the deployment

    def submit(self, model, job, result):
        async def wait():
            try:
                status, value = await self.replica.submit_batch((model.name, job))
            except asyncio.CancelledError:  # timed out or gone: drop its work from the batcher
                queued = getattr(job, "queued", None)
                if queued is not None:
                    queued.cancel()
                raise
            if status == "error":
                raise value
            return result(value)
        return wait()

    async def run_batch(self, items: list[tuple[str, object]]) -> list[tuple]:
        """One ``@serve.batch`` batch of (model name, job): every job through its model's
        batcher; (status, job or error) each."""
        for label in {self.models[name].label for name, _ in items}:
            self.metrics.requests_batched.labels(label).observe(
                sum(self.models[n].label == label for n, _ in items))
        futures = []
        for name, job in items:
            try:
                job.queued = self._batchers[name].submit(job)
                futures.append(asyncio.wrap_future(job.queued))
            except QueueFull as exc:
                futures.append(_failed(exc))
        out = []
        for f in await asyncio.gather(*futures, return_exceptions=True):
            out.append(("error", f) if isinstance(f, BaseException) else ("ok", f))
        return out


def _failed(exc: BaseException):
    future = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


def deployment(settings: Settings, api_key: str | None, replicas: int = 1, gpus: float = 0.0,
               cpus: float = 1.0, autoscaling: dict | None = None):
    from ray import serve

    options = {"ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus},
               "max_ongoing_requests": max(4 * settings.max_batch, 16),
               "max_queued_requests": settings.max_queue,
               "health_check_period_s": 10, "graceful_shutdown_timeout_s": 10}
    if autoscaling:
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = replicas
    threads = max(1, int(cpus))

    @serve.deployment(name="toolkit", **options)
    @serve.ingress()
    class Replica:
        def __init__(self):
            for source in settings.models:
                source.threads = threads       # intra-op threads = the CPUs Ray gave us
            self.service = RayService(settings)
            self.service.replica = self
            self.service.start(background=False)
            if self.service.failed:
                raise RuntimeError(self.service.failed)
            self.submit_batch.set_max_batch_size(settings.max_batch)
            self.submit_batch.set_batch_wait_timeout_s(settings.max_wait_ms / 1e3)

        def __serve_build_asgi_app__(self):
            return create_app(self.service, api_key=api_key, manage=False)

        # several batches may be in flight: the batcher's one worker thread is what runs the
        # sessions (never two batches on one session), joining them window by window
        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, max_concurrent_batches=64)
        async def submit_batch(self, items: list) -> list:
            return await self.service.run_batch(items)

        def check_health(self):
            if not self.service.ready:
                raise RuntimeError("models not loaded")

    return Replica.bind()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000,
        api_key_env: str | None = None, replicas: int = 1, gpus: float = 0.0,
        cpus: float = 1.0, address: str | None = None, autoscaling: str | None = None) -> None:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise MissingDependency("--engine ray needs Ray Serve: pip install 'ray[serve]'") from None
    key = api_key_from_env(api_key_env)
    check_number("--replicas", replicas, 1, 1024, integer=True)
    check_number("--gpus-per-replica", gpus, 0, 64)
    check_number("--cpus-per-replica", cpus, 0.01, 1024)
    scaling = None
    if autoscaling:
        try:
            scaling = json.loads(autoscaling)
        except ValueError as exc:
            raise ToolkitError(f"--autoscaling is not JSON ({exc}); e.g. "
                               "'{\"min_replicas\": 1, \"max_replicas\": 4}'") from None
        if not isinstance(scaling, dict):
            raise ToolkitError("--autoscaling must be a JSON object of Ray Serve's "
                               "autoscaling_config")
    check_settings(settings, host, port)
    console.print(f"starting Ray{' at ' + address if address else ' (local)'} and Ray Serve "
                  f"on http://{host}:{port}: {replicas if not scaling else 'autoscaled'} "
                  f"replica(s), {cpus:g} CPU / {gpus:g} GPU each…")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    except (OSError, ConnectionError, RuntimeError, ValueError) as exc:
        raise ToolkitError(f"Ray did not start ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:300]}); check --ray-address, or TMPDIR "
                           "(Ray's socket paths must stay under 107 bytes)") from None
    try:
        serve.start(http_options={"host": host, "port": port,
                                  "request_timeout_s": settings.timeout_s + 30})
        t0 = time.perf_counter()
        try:
            serve.run(deployment(settings, key, replicas, gpus, cpus, scaling), name="toolkit",
                      route_prefix="/", blocking=False)
        except RuntimeError as exc:
            raise ToolkitError(f"the Ray Serve deployment failed to start: "
                               f"{str(exc).splitlines()[-1][:300]}") from None
        routes = sorted({r for source in settings.models for r in source.family.served.routes})
        console.print(f"[green]ready[/] in {time.perf_counter() - t0:.0f} s: POST "
                      f"http://{host}:{port}{' · '.join(routes)} (Ctrl-C stops)")
        if not is_loopback(host):
            console.print(f"[yellow]note:[/] listening on {host}: other machines can reach this "
                          "server" + ("" if key else " — and no --api-key-env is set"))
        signal.signal(signal.SIGTERM, _interrupt)      # `kill` stops it as Ctrl-C does
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
