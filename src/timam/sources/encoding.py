"""Where a text file stops being valid in its encoding, so an error can name the line and the byte."""

from __future__ import annotations


def decode_problem(data: bytes, encoding: str) -> str | None:
    """``"line 3, byte 0xe9 at offset 41 (invalid continuation byte)"`` for the first byte of ``data``
    that ``encoding`` cannot decode (lines counted from 1), or None when all of it decodes."""
    try:
        data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return f"line {line}, byte 0x{data[error.start]:02x} at offset {error.start} ({error.reason})"
    return None
