"""Connection limits uvicorn does not set by itself.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``), but a connection that
sends a request line and then trickles — or never finishes — its headers stays open (the
"slowloris" pattern: 50 such connections were still open after a minute). ``HeaderTimeout``
gives every request ``header_timeout_s`` from its first byte (or from the end of the previous
response on a kept-alive connection) to complete its headers, then closes the connection.
The body has its own limit (``--timeout-s``, in the upload reader), and ``limit_concurrency``
caps the connections and requests in progress (503 past it).
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0


def header_timeout_protocol(seconds: float) -> type:
    """An ``H11Protocol`` whose connections must finish each request's headers in
    ``seconds``."""

    class HeaderTimeout(H11Protocol):
        header_timeout_s = seconds

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_timer = None
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:   # the request's headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():       # a kept-alive connection's next request
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeout
