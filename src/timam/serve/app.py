"""The web page and JSON API over one :class:`~timam.search.Searcher`.

==========================  ====================================================================
``GET /``                   the page (static files under ``/static``; nothing loads from elsewhere)
``GET /api/info``           checkpoint and index versions, image count, limits
``GET /api/search``         ``q`` (text), ``k`` (1..max_k): ``{"results": [{rank, row, path, score,
                            caption, thumb}]}``
``POST /api/search/image``  a multipart upload (field ``image``) or a raw image body; ``k``;
                            ``target=captions`` ranks the collection's captions instead of images
``GET /thumb/{row}``        a JPEG thumbnail of index row ``row`` (a number, never a path)
``GET /openapi.json``       the schema of all of the above, with this server's real bounds
==========================  ====================================================================

Every refusal is JSON ``{"error": message}`` (invalid parameters are a 400 that names the parameter);
a 500 means a bug: the catch-all handler logs the traceback and answers JSON, and the server keeps
serving. The Swagger and ReDoc pages stay off: FastAPI loads them from a CDN, which the page's
Content-Security-Policy (and a machine without internet) refuses, and no installed package ships them.
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures, whose parameter types
# are built inside ``create_app`` from the server's limits and cannot be resolved from strings.
import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from timam.search import Hit, Searcher, UnusableImageError
from timam.search.images import decode_image_bytes
from timam.serve.checks import QUERY_PATTERN, Limits, Refusal, check_query_string, row_message, validation_message
from timam.serve.guard import SECURITY_HEADERS, BodyLimits, EdgeGuard, HostPolicy
from timam.serve.models import ErrorBody, HitOut, ImageResults, Info, LimitsOut, Target, TextResults
from timam.serve.thumbs import ThumbnailError, Thumbnails

logger = logging.getLogger(__name__)

STATIC = Path(str(files("timam.serve") / "static"))
BINARY = {"type": "string", "format": "binary"}
# The body has two shapes, which one typed parameter cannot say: it is declared here and read in the route.
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {**BINARY, "description": "JPEG, PNG, WebP, GIF, BMP or TIFF"}},
                }
            },
            "image/*": {"schema": BINARY},
        },
    }
}


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


REFUSALS = {
    400: "a parameter or the request is invalid (the message names what to fix), or the Host is not this server's",
    403: "a POST sent by another site's page",
    404: "no such row, or its image can no longer be read",
    408: "the request body did not arrive in time",
    413: "the upload is larger than the server's cap",
    415: "not an image the server decodes, or not sent as one",
    500: "a bug: logged with its traceback, answered as JSON; the server keeps serving",
    503: "every image-query slot is busy; retry after Retry-After seconds",
}


def _refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for 400, 500 (any route) and ``statuses``, each an ``ErrorBody``."""
    described: dict[int | str, dict[str, Any]] = {}
    for status in sorted({400, 500, *statuses}):
        described[status] = {"model": ErrorBody, "description": REFUSALS[status]}
        if status == 503:
            described[status]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "required": True}}
    return described


def _hit(hit: Hit) -> HitOut:
    score = round(hit.score, 6)
    return HitOut(
        rank=hit.rank, row=hit.row, path=hit.path, score=score, caption=hit.caption, thumb=f"/thumb/{hit.row}"
    )


async def _strict_query_string(request: Request) -> None:
    check_query_string(request.scope.get("query_string", b""))


async def _upload_bytes(request: Request) -> bytes:
    """The uploaded image: the ``image`` file of a multipart form, or a raw ``image/*`` body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise Refusal(400, "the form has no image file; send it in the field 'image'")
            data = await upload.read()
    elif content_type.startswith(("image/", "application/octet-stream")):
        data = await request.body()
    else:
        raise Refusal(
            415, f"send the image as multipart/form-data (field 'image') or as an image/* body, not {content_type!r}"
        )
    if not data:
        raise Refusal(400, "the uploaded file is empty (0 bytes)")
    return data


def create_app(
    searcher: Searcher,
    *,
    limits: Limits | None = None,
    thumb_size: int = 256,
    host: str = "127.0.0.1",
    allow_hosts: tuple[str, ...] = (),
) -> FastAPI:
    """The FastAPI app serving ``searcher``'s index to clients that reach it as ``host`` (or ``allow_hosts``)."""
    limits = limits or Limits()
    thumbnails = Thumbnails(searcher.path, size=thumb_size)
    model_side = max(searcher.checkpoint.embedding_model.config.image_size)
    image_slots = asyncio.Semaphore(limits.image_queries)
    app = FastAPI(
        title="timam image search",
        summary="Text and image queries against one image index, with the checkpoint that built it.",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(_strict_query_string)],
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimits, limits=limits)
    app.add_middleware(EdgeGuard, hosts=HostPolicy.for_bind(host, allow_hosts))

    Text = Annotated[
        str,
        Query(
            min_length=1,
            max_length=limits.max_query_chars,
            pattern=QUERY_PATTERN,
            description="the query text: plain words, no control characters",
        ),
    ]
    K = Annotated[int, Query(ge=1, le=limits.max_k, description="how many results")]
    Row = Annotated[int, PathParam(ge=0, le=max(searcher.size - 1, 0), description="index row")]

    @app.exception_handler(Refusal)
    async def refusal(request: Request, error: Refusal) -> JSONResponse:
        return _error(error.status, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail)
        if isinstance(error.__cause__ or error.__context__, MultiPartException):  # Starlette's bare parser words
            message = f"the upload is not a valid multipart form ({message})"
        return _error(error.status_code, message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(*validation_message(error.errors(), limits, searcher.size))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, error: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody reads it; BodyLimits logged the disconnect

    @app.exception_handler(Exception)
    async def server_bug(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error serving %s %s", request.method, request.url.path)
        message = f"internal error ({type(error).__name__}); the server log has the details"
        return _error(500, message, SECURITY_HEADERS)

    @asynccontextmanager
    async def image_slot() -> AsyncIterator[None]:
        """One of ``limits.image_queries`` slots for decoding and embedding an image, or a 503."""
        try:
            async with asyncio.timeout(limits.image_wait_s):
                await image_slots.acquire()
        except TimeoutError:
            raise Refusal(
                503,
                f"{limits.image_queries} image queries are being searched; try again in a moment",
                {"Retry-After": "1"},
            ) from None
        try:
            yield
        finally:
            image_slots.release()

    def decoded(data: bytes) -> Image.Image:
        return decode_image_bytes(data, max_pixels=limits.max_pixels, fit=model_side)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info", response_model=Info, responses=_refusals())
    async def info() -> Info:
        """The index and checkpoint this server searches, and its limits."""
        limits_out = LimitsOut(
            max_query_chars=limits.max_query_chars,
            max_k=limits.max_k,
            default_k=limits.default_k,
            max_upload_bytes=limits.max_upload_bytes,
            max_pixels=limits.max_pixels,
        )
        return Info.model_validate({**searcher.describe(), "limits": limits_out})

    @app.get("/api/search", response_model=TextResults, responses=_refusals())
    async def search_text(q: Text, k: K = limits.default_k) -> TextResults:
        """The ``k`` indexed images closest to the text ``q``, best first."""
        text = q.strip()
        if not text:  # a blank that the pattern's notion of whitespace missed
            raise Refusal(400, "the query q is empty; type a few words describing the images")
        started = time.perf_counter()
        hits = await run_in_threadpool(searcher.by_text, text, k)
        took = round(1000 * (time.perf_counter() - started), 1)
        return TextResults(query=text, k=k, took_ms=took, results=[_hit(hit) for hit in hits])

    @app.post(
        "/api/search/image",
        response_model=ImageResults,
        responses=_refusals(403, 408, 413, 415, 503),
        openapi_extra=IMAGE_BODY,
    )
    async def search_image(request: Request, k: K = limits.default_k, target: Target = "images") -> ImageResults:
        """The ``k`` indexed images (or captions, ``target=captions``) closest to the uploaded image."""
        if target == "captions" and not searcher.has_captions:
            raise Refusal(400, "this index has no captions; search images (target=images)")
        data = await _upload_bytes(request)
        search = searcher.captions_for_image if target == "captions" else searcher.by_image
        async with image_slot():
            started = time.perf_counter()
            try:
                query = await run_in_threadpool(decoded, data)
            except UnusableImageError as error:
                raise Refusal(415, str(error)) from error
            hits = await run_in_threadpool(search, query, k)
        took = round(1000 * (time.perf_counter() - started), 1)
        return ImageResults(target=target, k=k, took_ms=took, results=[_hit(hit) for hit in hits])

    @app.get(
        "/thumb/{row}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG thumbnail"}, **_refusals(404)},
    )
    async def thumb(row: Row) -> Response:
        """A JPEG thumbnail of index row ``row``, at most ``thumb_size`` pixels a side."""
        if row >= searcher.size:  # only an empty index gets here: Row's bound says size - 1 otherwise
            raise Refusal(*row_message(str(row), searcher.size))
        try:
            data = await run_in_threadpool(thumbnails.get, row)
        except ThumbnailError as error:
            raise Refusal(404, str(error)) from error
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def openapi() -> dict[str, Any]:
        """FastAPI's schema less its 422 entries: invalid parameters are answered 400 (see ``checks``)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to adjust the schema
    return app
