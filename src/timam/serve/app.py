"""The web page and JSON API over one :class:`~timam.search.Searcher`.

==========================  ====================================================================
``GET /``                   the page (static files under ``/static``; nothing loads from elsewhere)
``GET /api/info``           checkpoint and index versions, image count, limits
``GET /api/search``         ``q`` (text), ``k`` (1..max_k): ``{"results": [{rank, row, path, score,
                            caption, thumb}]}``
``POST /api/search/image``  a multipart upload (field ``image``) or a raw image body; ``k``;
                            ``target=captions`` ranks the collection's captions instead of images
``GET /thumb/{row}``        a JPEG thumbnail of index row ``row`` (a number, never a path)
==========================  ====================================================================

Every refusal is a 4xx JSON ``{"error": message}``. A 500 means a bug: the catch-all handler logs
the traceback and answers JSON, and the server keeps serving.
"""

from __future__ import annotations

import logging
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from timam.search import Hit, Searcher, UnusableImageError
from timam.serve.checks import BadRequest, Limits, check_k, check_row, check_text, query_params, read_capped
from timam.serve.thumbs import ThumbnailError, Thumbnails

logger = logging.getLogger(__name__)

STATIC = Path(str(files("timam.serve") / "static"))
TARGETS = ("images", "captions")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {**hit.to_dict(), "score": round(hit.score, 6), "thumb": f"/thumb/{hit.row}"}


async def _upload_bytes(request: Request, limits: Limits) -> bytes:
    """The uploaded image's bytes: the ``image`` file of a multipart form, or a raw ``image/*`` body."""
    body = await read_capped(request.stream(), request.headers.get("content-length"), limits)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):

        async def replay():
            yield body
            yield b""

        try:
            form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=8).parse()
        except MultiPartException as error:
            raise BadRequest(400, f"the upload is not a valid multipart form ({error.message})") from error
        upload = form.get("image")
        if upload is None:
            upload = next((value for value in form.values() if isinstance(value, UploadFile)), None)
        if not isinstance(upload, UploadFile):
            raise BadRequest(400, "the form has no image file; send it in the field 'image'")
        data = await upload.read()
        await form.close()
    elif content_type.startswith(("image/", "application/octet-stream")):
        data = body
    else:
        raise BadRequest(
            415, f"send the image as multipart/form-data (field 'image') or as an image/* body, not {content_type!r}"
        )
    if len(data) > limits.max_upload_bytes:
        raise BadRequest(413, f"the image is larger than {limits.max_upload_bytes // (1024 * 1024)} MB")
    if not data:
        raise BadRequest(400, "the uploaded file is empty (0 bytes)")
    return data


def create_app(searcher: Searcher, *, limits: Limits | None = None, thumb_size: int = 256) -> FastAPI:
    """The FastAPI app serving ``searcher``'s index (see the module docstring for the routes)."""
    limits = limits or Limits()
    thumbnails = Thumbnails(searcher.path, size=thumb_size)
    app = FastAPI(title="timam image search", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return _error(error.status, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, f"invalid request: {error.errors()}")

    @app.exception_handler(Exception)
    async def server_bug(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error serving %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(error).__name__}); the server log has the details")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return {
            **searcher.describe(),
            "limits": {
                "max_query_chars": limits.max_query_chars,
                "max_k": limits.max_k,
                "default_k": limits.default_k,
                "max_upload_bytes": limits.max_upload_bytes,
            },
        }

    @app.get("/api/search")
    async def search_text(request: Request) -> dict[str, Any]:
        params = query_params(request.scope.get("query_string", b""))
        text = check_text(params.get("q"), limits)
        k = check_k(params.get("k"), limits)
        started = time.perf_counter()
        hits = await run_in_threadpool(searcher.by_text, text, k)
        return {
            "query": text,
            "k": k,
            "took_ms": round(1000 * (time.perf_counter() - started), 1),
            "results": [_hit_json(hit) for hit in hits],
        }

    @app.post("/api/search/image")
    async def search_image(request: Request) -> dict[str, Any]:
        params = query_params(request.scope.get("query_string", b""))
        k = check_k(params.get("k"), limits)
        target = params.get("target", "images")
        if target not in TARGETS:
            raise BadRequest(400, f"target must be one of {list(TARGETS)}, got {target[:20]!r}")
        if target == "captions" and not searcher.has_captions:
            raise BadRequest(400, "this index has no captions; search images (target=images)")
        data = await _upload_bytes(request, limits)
        started = time.perf_counter()
        search = searcher.captions_for_image if target == "captions" else searcher.by_image
        try:
            hits = await run_in_threadpool(search, data, k)
        except UnusableImageError as error:
            raise BadRequest(415, str(error)) from error
        return {
            "target": target,
            "k": k,
            "took_ms": round(1000 * (time.perf_counter() - started), 1),
            "results": [_hit_json(hit) for hit in hits],
        }

    @app.get("/thumb/{row}")
    async def thumb(row: str) -> Response:
        number = check_row(row, searcher.size)
        try:
            data = await run_in_threadpool(thumbnails.get, number)
        except ThumbnailError as error:
            raise BadRequest(404, str(error)) from error
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app
