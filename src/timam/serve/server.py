"""The uvicorn settings ``timam serve`` runs with (the tests run the same), and JSON for uvicorn's own 400s.

uvicorn answers a request it cannot parse (a malformed request line or header, a bad
Content-Length or chunk) itself, before any app sees it, in plain text. The API promises
``{"error": message}`` JSON for every refusal, so the protocol classes below override the one
method uvicorn calls for that answer (``send_400_response``) and write the same status as JSON.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from timam.serve.guard import SECURITY_HEADERS

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional for uvicorn; h11 always comes with it
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


def bad_http_answer(reason: str) -> bytes:
    """The whole HTTP response for a request uvicorn could not parse."""
    body = json.dumps(
        {"error": f"the request is not valid HTTP ({reason.rstrip('.')}); send a well-formed HTTP/1.1 request"}
    ).encode()
    head = [
        "HTTP/1.1 400 Bad Request",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name.lower()}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _answer_bad_http(transport: asyncio.Transport, reason: str) -> None:
    transport.write(bad_http_answer(reason))
    transport.close()


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering unparsable requests in JSON."""

    def send_400_response(self, msg: str) -> None:
        _answer_bad_http(self.transport, msg)


if HttpToolsProtocol is not None:

    class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol (its default when installed), answering unparsable requests in JSON."""

        def send_400_response(self, msg: str) -> None:
            _answer_bad_http(self.transport, msg)

    PROTOCOL: type[asyncio.Protocol] = JsonErrorsHttpToolsProtocol
else:
    PROTOCOL = JsonErrorsH11Protocol


def server_config(app: Any, *, host: str = "127.0.0.1", port: int = 8000, **settings: Any) -> uvicorn.Config:
    """uvicorn's config for ``app``: the JSON-400 protocol, no ``server: uvicorn`` banner, and ``settings``."""
    return uvicorn.Config(app, host=host, port=port, http=PROTOCOL, server_header=False, **settings)
