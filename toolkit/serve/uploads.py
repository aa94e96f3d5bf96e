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


class _FormReader:
    """The multipart parser's callbacks: each part's headers and data, within the limits."""

    def __init__(self, upload: Upload, limit: int, directory: Path):
        self.upload, self.limit, self.directory = upload, limit, directory
        self.name: str | None = None
        self.headers: dict[str, bytes] = {}
        self.field, self.value = b"", b""
        self.parts = 0
        self.buf = bytearray()
        self.out = None
        self.error: UploadError | None = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end}

    def fail(self, status: int, message: str) -> None:
        if self.error is None:
            self.error = UploadError(status, message)

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            self.fail(400, f"the form has more than {MAX_PARTS} parts; an audio request has a "
                           "file and a few fields")
        self.headers, self.name, self.buf = {}, None, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]
        self._header_size()

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]
        self._header_size()

    def _header_size(self) -> None:
        if len(self.field) + len(self.value) > MAX_HEADER_BYTES:
            self.fail(400, f"a multipart header is over {MAX_HEADER_BYTES // 1024} KiB")
            self.field, self.value = b"", b""

    def header_end(self) -> None:
        if len(self.headers) >= MAX_HEADERS:
            self.fail(400, f"a multipart part has more than {MAX_HEADERS} headers")
        else:
            self.headers[self.field.decode("latin-1").lower()] = self.value
        self.field, self.value = b"", b""

    def headers_finished(self) -> None:
        disposition, params = mp.parse_options_header(self.headers.get("content-disposition",
                                                                       b""))
        if disposition != b"form-data" or b"name" not in params:
            self.fail(400, "a multipart part has no form-data name; let the client library "
                           "build the form")
            return
        self.name = params[b"name"].decode("utf-8", "replace")
        if self.name == "file":
            if self.upload.file is not None:
                self.fail(400, "the form has two 'file' parts; send one audio file per request")
                return
            # the client's filename is ignored: the server chooses the name and the place
            fd, path = tempfile.mkstemp(prefix="upload-", dir=self.directory)
            self.upload.file = Path(path)
            self.out = os.fdopen(fd, "wb")
            self.upload.content_type = self.headers.get("content-type", b"").decode(
                "latin-1", "replace")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None or self.name is None:
            return
        if self.name == "file" and self.out is not None:
            self.upload.file_bytes += end - start
            if self.upload.file_bytes > self.limit:
                self.fail(413, f"the audio file is over {self.limit / 1e6:.0f} MB "
                               "(--max-upload-mb); send a shorter recording or split it")
                return
            self.out.write(data[start:end])
        else:
            self.buf += data[start:end]
            if len(self.buf) > MAX_FIELD_BYTES:
                self.fail(400, f"form field {self.name!r} is over {MAX_FIELD_BYTES // 1024} KiB")

    def part_end(self) -> None:
        if self.name == "file" and self.out is not None:
            self.out.close()
            self.out = None
        elif self.name is not None and self.error is None:
            try:
                value = bytes(self.buf).decode("utf-8")
                self.upload.fields[self.name] = value
                self.upload.repeated.setdefault(self.name, []).append(value)
            except UnicodeDecodeError:
                self.fail(400, f"form field {self.name!r} is not UTF-8 text")

    def check_complete(self) -> None:
        if self.error is not None:
            raise self.error
        if self.out is not None:
            raise UploadError(400, "the multipart body ended inside the file part; the upload "
                                   "was cut short — send it again")
        if self.upload.file is None:
            raise UploadError(400, "the form has no 'file' part; send the audio as "
                                   "multipart field 'file'")
        if self.upload.file_bytes == 0:
            raise UploadError(400, "the uploaded file is empty (0 bytes)")


async def receive_upload(chunks: AsyncIterator[bytes], content_type: str | None, limit: int,
                         directory: Path) -> Upload:
    """Parse a multipart body as it streams in. The ``file`` part goes to a new private file
    in ``directory``; on any error the file is removed before the error propagates."""
    boundary = boundary_of(content_type)
    upload = Upload()
    reader = _FormReader(upload, limit, directory)
    parser = mp.MultipartParser(boundary, reader.callbacks())
    try:
        async for chunk in chunks:
            if chunk:
                try:
                    parser.write(chunk)
                except mp.MultipartParseError as exc:
                    raise UploadError(400, f"malformed multipart body ({exc}); let the client "
                                           "library build the form") from None
            if reader.error is not None:
                raise reader.error
        try:
            parser.finalize()
        except mp.MultipartParseError as exc:
            raise UploadError(400, f"malformed multipart body ({exc})") from None
        reader.check_complete()
        return upload
    except BaseException:       # includes a client that went away (ClientDisconnect)
        if reader.out is not None:
            reader.out.close()
        upload.discard()
        raise
