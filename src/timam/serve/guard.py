"""Who may ask, and how: the checks every request passes before the API sees it (pure ASGI middleware).

- **Host** (DNS rebinding): a page on any site can make its own name resolve to 127.0.0.1 and then
  read this server as if it were that site. Only the names the server was bound to are answered
  (:class:`HostPolicy`); any other ``Host`` gets a 400.
- **Origin**: a write (POST) from another site's page is refused with a 403; clients that send no
  ``Origin`` (curl, scripts) are not browsers and carry no one else's credentials.
- **Headers**: every answer says ``nosniff``, may not be framed, and its Content-Security-Policy
  lets the page load only this server's own files.
- **Body**: at most ``Limits.max_body_bytes`` (a declared larger body is refused before it is read,
  a chunked one is counted as it arrives) and all of it within ``Limits.body_timeout_s``; a client
  that disconnects mid-body is logged as one line.

Starlette's ``TrustedHostMiddleware`` and FastAPI's ``max_body_size`` do parts of this, but answer in
plain text (Starlette's limit even replaces the app's answer to a declared-too-large body), and the
API promises ``{"error": message}`` JSON for every refusal.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from timam.serve.checks import Limits

logger = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",  # no other site may embed the thumbnails
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CLOSE = {"Connection": "close"}


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _bare(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class HostPolicy:
    """The ``Host`` names a server answers to.

    ``names``: the bound host, plus localhost, 127.0.0.1 and ::1 when it is a loopback address.
    ``any_ip``: bound to every interface (0.0.0.0 or ::): any IP address is answered, because a
    rebinding attack needs a DNS name and an address literal is none; names must be this machine's
    own (hostname, FQDN) or given with ``--allow-host``. ``any_host``: ``--allow-host '*'``, no check.
    """

    names: frozenset[str]
    any_ip: bool = False
    any_host: bool = False

    @classmethod
    def for_bind(cls, host: str, allow: Sequence[str] = ()) -> HostPolicy:
        bound = _bare(host)
        names = {bound, *(_bare(name) for name in allow if name != "*")}
        wildcard = bound in WILDCARD_BINDS
        if bound == "localhost" or (_is_ip(bound) and ipaddress.ip_address(bound).is_loopback) or wildcard:
            names |= LOOPBACK_NAMES
        if wildcard:
            names |= {_bare(socket.gethostname()), _bare(socket.getfqdn())}
        names.discard("")
        return cls(frozenset(names), any_ip=wildcard, any_host="*" in allow)

    def allows(self, name: str) -> bool:
        name = _bare(name)
        return self.any_host or name in self.names or (self.any_ip and _is_ip(name))

    def describe(self) -> str:
        names = ", ".join(sorted(self.names)) + (" and any IP address" if self.any_ip else "")
        return f"this server answers to {names}; start it with --allow-host NAME to add a name"


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def _host_name(header: str) -> str | None:
    """The name part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), None if malformed."""
    try:
        parts = urlsplit(f"//{header}")
        parts.port  # noqa: B018 -- raises ValueError for a malformed port
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None or parts.path or parts.query:
        return None
    return parts.hostname


class EdgeGuard:
    """Host and Origin checks, and the security headers on every answer (see the module docstring)."""

    def __init__(self, app: ASGIApp, hosts: HostPolicy) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        name = _host_name(host)
        if name is None or not self.hosts.allows(name):
            await _refuse(400, f"Host {host[:80]!r} is not a name of this server; {self.hosts.describe()}")(
                scope, receive, send
            )
            return
        origin = headers.get("origin")
        if scope["method"] not in SAFE_METHODS and origin is not None and not _same_origin(origin, host):
            message = (
                f"a {scope['method']} from the page of {origin[:80]!r} is refused: "
                "only this server's own page may send one"
            )
            await _refuse(403, message)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.lower().encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class BodyLimits:
    """A request body capped in size and time as it arrives (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            await _refuse(413, limits.upload_too_large(), CLOSE)(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + limits.body_timeout_s
        seen = 0
        finished = False

        async def next_message() -> Message:
            try:
                async with asyncio.timeout_at(deadline):
                    return await receive()
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body did not arrive within {limits.body_timeout_s:g} s "
                    f"({seen:,} bytes came); send it again",
                    headers=CLOSE,
                ) from None

        async def limited_receive() -> Message:
            nonlocal seen, finished
            if finished:
                return await receive()
            message = await next_message()
            if message["type"] == "http.disconnect":
                finished = True
                client = "{}:{}".format(*scope["client"]) if scope.get("client") else "a client"
                logger.info(
                    "%s disconnected during the body of %s %s (%d bytes received)",
                    client,
                    scope["method"],
                    scope["path"],
                    seen,
                )
                return message
            seen += len(message.get("body", b""))
            finished = not message.get("more_body", False)
            if seen > limits.max_body_bytes:
                # Read on (discarding, up to 4x the cap) so the client gets to read the 413, not a reset.
                while not finished and seen <= 4 * limits.max_body_bytes:
                    extra = await next_message()
                    seen += len(extra.get("body", b""))
                    finished = extra["type"] == "http.disconnect" or not extra.get("more_body", False)
                raise HTTPException(413, limits.upload_too_large(), headers=CLOSE)
            return message

        await self.app(scope, limited_receive, send)
