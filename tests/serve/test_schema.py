"""The API against its own OpenAPI schema: typed parameters with this server's real bounds, and a
property-based run of schemathesis over real HTTP on 127.0.0.1 (no 5xx, every answer as documented).

The server here has non-default limits (k up to 7, queries up to 40 characters), so a schema that
stated FastAPI's or the class's defaults instead of the server's own would fail.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.search.tiny_index import build_tiny_index
from tests.serve.live_server import live_server, request
from timam.search import Searcher
from timam.serve.app import create_app
from timam.serve.checks import Limits

LIMITS = Limits(max_k=7, default_k=3, max_query_chars=40, max_upload_bytes=64 * 1024)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tiny = build_tiny_index(tmp_path_factory.mktemp("schema"))
    with live_server(create_app(Searcher.open(tiny.root, device="cpu"), limits=LIMITS)) as address:
        yield address


@pytest.fixture(scope="module")
def openapi(server):
    reply = request(server, "GET", "/openapi.json")
    assert reply.status == 200
    return reply.json()


def _parameters(openapi, method: str, path: str) -> dict[str, dict]:
    return {param["name"]: param for param in openapi["paths"][path][method].get("parameters", [])}


def test_every_route_is_described_with_the_servers_own_bounds(openapi):
    operations = {(method.upper(), path) for path, methods in openapi["paths"].items() for method in methods}
    assert operations == set(OPERATIONS)
    text = _parameters(openapi, "get", "/api/search")
    assert text["q"]["required"] and text["q"]["schema"]["maxLength"] == 40 and text["q"]["schema"]["minLength"] == 1
    assert text["k"]["schema"] == {**text["k"]["schema"], "type": "integer", "minimum": 1, "maximum": 7, "default": 3}
    image = _parameters(openapi, "post", "/api/search/image")
    assert image["k"]["schema"]["maximum"] == 7
    assert image["target"]["schema"]["enum"] == ["images", "captions"]
    body = openapi["paths"]["/api/search/image"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "image/*"}
    row = _parameters(openapi, "get", "/thumb/{row}")["row"]["schema"]
    assert (row["type"], row["minimum"], row["maximum"]) == ("integer", 0, 5)  # the tiny index has 6 rows
    thumb = openapi["paths"]["/thumb/{row}"]["get"]["responses"]["200"]["content"]
    assert list(thumb) == ["image/jpeg"]


def test_every_refusal_is_documented_as_the_error_shape_and_never_as_422(openapi):
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)  # invalid parameters are answered 400
            for status, response in responses.items():
                assert status != "default", (method, path)  # each refusal is named, so an undocumented one fails
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert openapi["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


def test_the_answers_match_their_models(server):
    info = request(server, "GET", "/api/info").json()
    assert info["limits"] == {
        "max_query_chars": 40,
        "max_k": 7,
        "default_k": 3,
        "max_upload_bytes": 64 * 1024,
        "max_pixels": LIMITS.max_pixels,
    }
    assert set(request(server, "GET", "/api/search?q=sky").json()) == {"query", "k", "took_ms", "results"}


def test_swagger_and_redoc_stay_off_because_they_load_from_a_cdn(server):
    for path in ("/docs", "/redoc"):
        reply = request(server, "GET", path)
        assert reply.status == 404 and reply.json() == {"error": "Not Found"}


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"http://{server}/openapi.json")


# schemathesis' own ``@schema.parametrize()`` over ``schemathesis.pytest.from_fixture`` fails on pytest 9
# (it sets ``request.node._nodeid``, gone from pytest 9), so each operation's strategy is run with
# Hypothesis directly, as schemathesis' Python API offers; the operations are listed here and the
# first test above checks this list is all of them.
OPERATIONS = [("GET", "/api/info"), ("GET", "/api/search"), ("POST", "/api/search/image"), ("GET", "/thumb/{row}")]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_api_keeps_its_schema_under_generated_requests(api_schema, method, path):
    """Generated requests, valid and invalid: never a 5xx, and every answer as the schema documents it."""
    operation = api_schema[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    # A schema cannot say "a decodable image": generated image bytes are schema-valid yet rightly refused (415).
    excluded = [schemathesis.checks.positive_data_acceptance] if path == "/api/search/image" else []

    @given(case=cases)
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        case.call_and_validate(excluded_checks=excluded)

    check()
