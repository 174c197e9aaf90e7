"""What a request may ask for, and the plain words for each refusal.

FastAPI checks the typed parameters (their bounds come from :class:`Limits`, so ``/openapi.json``
states the real ones); :func:`validation_message` turns its errors into a sentence naming the
parameter and the fix. Two checks FastAPI cannot make stay here: the raw query string must be valid
UTF-8 (Starlette's parser replaces bad bytes with U+FFFD, so a garbled query would be searched as
if it were text), and a query must hold more than blanks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from timam.search.images import MAX_PIXELS

MB = 1024 * 1024
# Plain text: no control characters but tab, newline and carriage return, and something besides blanks.
_TEXT = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
QUERY_PATTERN = rf"^{_TEXT}*[^\s\x00-\x1f\x7f]{_TEXT}*$"
ROW_DIGITS = 12  # a row named by more digits than this is not a row number


@dataclass(frozen=True)
class Limits:
    """One server's limits: what a request may ask for, and how much work it may cause at once."""

    max_query_chars: int = 500
    max_k: int = 100
    default_k: int = 10
    max_upload_bytes: int = 10 * MB
    multipart_overhead: int = 64 * 1024  # boundaries and part headers around the file
    max_pixels: int = MAX_PIXELS  # decoded pixels of a query image
    image_queries: int = 4  # image queries decoded and embedded at once; more wait, then get a 503
    image_wait_s: float = 5.0  # how long a query waits for one of those slots
    body_timeout_s: float = 30.0  # a request body must arrive whole within this time (408 otherwise)

    def __post_init__(self) -> None:
        numbers = {
            "max_query_chars": self.max_query_chars,
            "max_k": self.max_k,
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels,
            "image_queries": self.image_queries,
        }
        for name, value in numbers.items():
            if value < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {value}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"Limits.default_k must be from 1 to max_k={self.max_k}, got {self.default_k}")
        if self.image_wait_s < 0 or self.body_timeout_s <= 0:
            raise ValueError("Limits.image_wait_s must be >= 0 and Limits.body_timeout_s > 0")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: an upload plus its multipart framing."""
        return self.max_upload_bytes + self.multipart_overhead

    def upload_too_large(self) -> str:
        return f"the upload is larger than {self.max_upload_bytes / MB:g} MB; send a smaller image"


class Refusal(Exception):
    """A request the server refuses: ``status``, a message for the user and any headers (Retry-After)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def check_query_string(raw: bytes) -> None:
    """Refuse a query string that is not valid UTF-8 once percent-decoded."""
    try:
        parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise Refusal(400, f"the query string is not valid UTF-8 ({error.reason} at byte {error.start})") from error
    except ValueError as error:
        raise Refusal(400, f"the query string cannot be parsed ({error})") from error


def _text_message(kind: str, value: str, limits: Limits) -> str:
    if kind == "missing":
        return "give a query: /api/search?q=two+airplanes+parked"
    if kind == "string_too_long":
        return f"the query is {len(value)} characters long; at most {limits.max_query_chars} are allowed"
    if not value.strip():
        return "the query q is empty; type a few words describing the images"
    return "the query contains control characters; send plain text"


def _k_message(value: str, limits: Limits) -> str:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        return f"k must be a whole number from 1 to {limits.max_k}, got {value[:20]!r}"
    return f"k must be from 1 to {limits.max_k}, got {int(text)}"


def row_message(value: str, size: int) -> tuple[int, str]:
    """A refused thumbnail row: 404 for a number past the index, 400 for anything that is not a row number."""
    if value.isascii() and value.isdigit() and len(value) <= ROW_DIGITS:
        return 404, f"row {int(value)} is not in the index, which has {size} rows (0 ... {size - 1})"
    return 400, f"a thumbnail is asked for by row number (/thumb/0 ... /thumb/{size - 1}), got {value[:40]!r}"


def validation_message(errors: Sequence[Mapping[str, Any]], limits: Limits, size: int) -> tuple[int, str]:
    """FastAPI's first validation error as (status, a sentence naming the parameter and the fix)."""
    error = errors[0]
    where, name = (tuple(error["loc"]) + ("", ""))[:2]
    kind = str(error["type"])
    value = error.get("input")
    value = value if isinstance(value, str) else ""
    if (where, name) == ("query", "q"):
        return 400, _text_message(kind, value, limits)
    if (where, name) == ("query", "k"):
        return 400, _k_message(value, limits)
    if (where, name) == ("query", "target"):
        return 400, f"target must be one of ['images', 'captions'], got {value[:20]!r}"
    if (where, name) == ("path", "row"):
        return row_message(value, size)
    return 400, f"{where} parameter {name!r}: {error.get('msg', 'invalid')}"
