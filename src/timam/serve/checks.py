"""What a request may ask for, checked before any work: each refusal is a 4xx with a message saying why.

The query string is decoded here from the raw bytes, strictly: Starlette's own parser replaces
invalid UTF-8 with U+FFFD, so a garbled query would be searched as if it were text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The server's limits: query length (characters), results per query, upload size (bytes)."""

    max_query_chars: int = 500
    max_k: int = 100
    default_k: int = 10
    max_upload_bytes: int = 10 * MB
    multipart_overhead: int = 64 * 1024  # boundaries and part headers around the file


class BadRequest(Exception):
    """A request the server refuses: ``status`` (4xx) and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def query_params(raw: bytes) -> dict[str, str]:
    """The query string's parameters (the last of a repeated name), decoded as strict UTF-8."""
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise BadRequest(400, f"the query string is not valid UTF-8 ({error.reason} at byte {error.start})") from error
    except ValueError as error:
        raise BadRequest(400, f"the query string cannot be parsed ({error})") from error
    return dict(pairs)


def check_text(value: str | None, limits: Limits) -> str:
    """A query text: present, not blank, at most ``max_query_chars``, no control characters."""
    if value is None:
        raise BadRequest(400, "give a query: /api/search?q=two+airplanes+parked")
    text = value.strip()
    if not text:
        raise BadRequest(400, "the query q is empty; type a few words describing the images")
    if len(text) > limits.max_query_chars:
        raise BadRequest(400, f"the query is {len(text)} characters long; at most {limits.max_query_chars} are allowed")
    if any(ord(char) < 32 and char not in "\t\n\r" for char in text) or "\x7f" in text:
        raise BadRequest(400, "the query contains control characters; send plain text")
    return text


def check_k(value: str | None, limits: Limits) -> int:
    """``k``: an integer from 1 to ``max_k`` (default ``default_k``)."""
    if value is None or value == "":
        return limits.default_k
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise BadRequest(400, f"k must be a whole number from 1 to {limits.max_k}, got {value[:20]!r}")
    k = int(text)
    if not 1 <= k <= limits.max_k:
        raise BadRequest(400, f"k must be from 1 to {limits.max_k}, got {k}")
    return k


def check_row(value: str, size: int) -> int:
    """A thumbnail's row: decimal digits only (never a path) naming one of the ``size`` rows."""
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise BadRequest(
            400, f"a thumbnail is asked for by row number (/thumb/0 ... /thumb/{size - 1}), got {value[:40]!r}"
        )
    row = int(value)
    if row >= size:
        raise BadRequest(404, f"row {row} is not in the index, which has {size} rows (0 ... {size - 1})")
    return row


async def read_capped(stream: AsyncIterator[bytes], declared: str | None, limits: Limits) -> bytes:
    """The request body, refused with 413 as soon as it passes the upload cap.

    A declared Content-Length over the cap is refused before reading. An undeclared (chunked) body
    is counted while read; past the cap the rest is drained without being kept, up to four times the
    cap, so the client reads the 413 instead of a reset connection.
    """
    cap = limits.max_upload_bytes + limits.multipart_overhead
    too_large = BadRequest(413, f"the upload is larger than {limits.max_upload_bytes // MB} MB; send a smaller image")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, f"Content-Length {declared[:20]!r} is not a number")
        if int(declared) > cap:
            raise too_large
    body = bytearray()
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > cap:
            if seen > 4 * cap:
                break
            continue
        body += chunk
    if seen > cap:
        raise too_large
    return bytes(body)
