"""Multipart uploads streamed to a private temporary file.

The server never uses the name a client gives its file: the bytes go to a file ``mkstemp``
creates (mode 0600) inside the server's own directory (mode 0700), are counted as they
arrive, and the upload stops with 413 once it passes ``--max-upload-mb`` — before the rest of
a 1 GB body is read. Text fields (model, language, prompt, …) are kept in memory, each capped
at 64 KiB; a body with more parts than an OpenAI request has is refused. The caller deletes
the file after decoding it (``Upload.discard``); a client that disconnects mid-upload leaves
nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import python_multipart.multipart as mp

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 32
MAX_HEADER_BYTES = 8 * 1024       # one part header (name + value)
MAX_HEADERS = 16                  # headers of one part


class UploadError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)       # the last value of each field
    repeated: dict[str, list[str]] = field(default_factory=dict)   # every value, in order
    file: Path | None = None           # the private temporary file of the ``file`` part
    file_bytes: int = 0
    content_type: str = ""             # what the client said the file was (not trusted)

    def discard(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            self.file = None


def boundary_of(content_type: str | None) -> bytes:
    kind, params = mp.parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        raise UploadError(415, "send the audio as multipart/form-data with a 'file' part (got "
                               f"Content-Type {content_type or 'none'!r})")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise UploadError(400, "the multipart Content-Type has no valid boundary; let the "
                               "client library build the form")
    return boundary


def check_length(content_length: str | None, limit: int) -> None:
    """413 at once when the declared body is over the limit (nothing of it is read)."""
    if content_length is None:
        return
    try:
        n = int(content_length)
    except ValueError:
        raise UploadError(400, f"Content-Length {content_length!r} is not a number") from None
    if n > limit + MAX_PARTS * MAX_FIELD_BYTES:   # what the other fields may add
        raise UploadError(413, f"the request body is {n / 1e6:.1f} MB; this server takes audio "
                               f"files up to {limit / 1e6:.0f} MB (--max-upload-mb)")


async def receive_upload(chunks: AsyncIterator[bytes], content_type: str | None, limit: int,
                         directory: Path) -> Upload:
    """Parse a multipart body as it streams in. The ``file`` part goes to a new private file
    in ``directory``; on any error the file is removed before the error propagates."""
    boundary = boundary_of(content_type)
    upload = Upload()
    state = {"name": None, "headers": {}, "field": b"", "value": b"", "parts": 0,
             "buf": bytearray(), "out": None, "error": None}

    def fail(status: int, message: str) -> None:
        if state["error"] is None:
            state["error"] = UploadError(status, message)

    def on_part_begin() -> None:
        state["parts"] += 1
        if state["parts"] > MAX_PARTS:
            fail(400, f"the form has more than {MAX_PARTS} parts; an audio request has a file "
                      "and a few fields")
        state["headers"], state["name"], state["buf"] = {}, None, bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]
        header_size()

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]
        header_size()

    def header_size() -> None:
        if len(state["field"]) + len(state["value"]) > MAX_HEADER_BYTES:
            fail(400, f"a multipart header is over {MAX_HEADER_BYTES // 1024} KiB")
            state["field"], state["value"] = b"", b""

    def on_header_end() -> None:
        if len(state["headers"]) >= MAX_HEADERS:
            fail(400, f"a multipart part has more than {MAX_HEADERS} headers")
        else:
            state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        disposition, params = mp.parse_options_header(
            state["headers"].get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            fail(400, "a multipart part has no form-data name; let the client library build "
                      "the form")
            return
        name = params[b"name"].decode("utf-8", "replace")
        state["name"] = name
        if name == "file":
            if upload.file is not None:
                fail(400, "the form has two 'file' parts; send one audio file per request")
                return
            # the client's filename is ignored: the server chooses the name and the place
            fd, path = tempfile.mkstemp(prefix="upload-", dir=directory)
            upload.file = Path(path)
            state["out"] = os.fdopen(fd, "wb")
            upload.content_type = state["headers"].get("content-type", b"").decode(
                "latin-1", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["error"] is not None or state["name"] is None:
            return
        if state["name"] == "file" and state["out"] is not None:
            upload.file_bytes += end - start
            if upload.file_bytes > limit:
                fail(413, f"the audio file is over {limit / 1e6:.0f} MB (--max-upload-mb); "
                          "send a shorter recording or split it")
                return
            state["out"].write(data[start:end])
        else:
            state["buf"] += data[start:end]
            if len(state["buf"]) > MAX_FIELD_BYTES:
                fail(400, f"form field {state['name']!r} is over {MAX_FIELD_BYTES // 1024} KiB")

    def on_part_end() -> None:
        if state["name"] == "file" and state["out"] is not None:
            state["out"].close()
            state["out"] = None
        elif state["name"] is not None and state["error"] is None:
            try:
                value = bytes(state["buf"]).decode("utf-8")
                upload.fields[state["name"]] = value
                upload.repeated.setdefault(state["name"], []).append(value)
            except UnicodeDecodeError:
                fail(400, f"form field {state['name']!r} is not UTF-8 text")

    parser = mp.MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in chunks:
            if chunk:
                try:
                    parser.write(chunk)
                except mp.MultipartParseError as exc:
                    raise UploadError(400, f"malformed multipart body ({exc}); let the client "
                                           "library build the form") from None
            if state["error"] is not None:
                raise state["error"]
        try:
            parser.finalize()
        except mp.MultipartParseError as exc:
            raise UploadError(400, f"malformed multipart body ({exc})") from None
        if state["error"] is not None:
            raise state["error"]
        if state["out"] is not None:
            raise UploadError(400, "the multipart body ended inside the file part; the upload "
                                   "was cut short — send it again")
        if upload.file is None:
            raise UploadError(400, "the form has no 'file' part; send the audio as "
                                   "multipart field 'file'")
        if upload.file_bytes == 0:
            raise UploadError(400, "the uploaded file is empty (0 bytes)")
        return upload
    except BaseException:       # includes a client that went away (ClientDisconnect)
        if state["out"] is not None:
            state["out"].close()
        upload.discard()
        raise
