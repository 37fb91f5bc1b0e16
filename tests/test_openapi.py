"""The OpenAPI description served at /api/openapi.json, checked by schemathesis in-process:
generated requests for every operation, every response validated against the description."""

from __future__ import annotations

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.conftest import assert_consistent, png_bytes, upload, wait_until
from webapp.gallery import get_gallery
from webapp.openapi import SPEC

OPERATIONS = [
    (path, method.upper())
    for path, item in SPEC["paths"].items()
    for method in item
    if method != "parameters"
]
# Negative requests need an input the spec constrains (a body or a typed query parameter).
CONSTRAINED = {
    (path, method.upper())
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
    if method != "parameters"
    and (
        "requestBody" in operation
        or any(p["in"] == "query" for p in operation.get("parameters", []))
    )
}
CASES = [(*operation, GenerationMode.POSITIVE) for operation in OPERATIONS] + [
    (*operation, GenerationMode.NEGATIVE) for operation in OPERATIONS if operation in CONSTRAINED
]
# Inputs the schema cannot describe fully: an upload must also be a decodable image and a
# cursor must come from `next_cursor`, so schema-valid requests may rightly be refused.
OPAQUE_INPUTS = {("/api/images", "POST"), ("/api/images", "GET")}
EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def app(make_app) -> Flask:
    """The app with room for every generated upload in its encode queue: admission (503 when
    full) is tested in test_uploads.py; here a slow CPU must not turn checks into refusals."""
    return make_app(encode_queue=100_000)


def test_the_spec_is_served_and_lists_every_api_route(app: Flask, client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.") and spec["servers"] == [{"url": "http://localhost"}]
    routes = {
        (rule.rule.replace("<image_id>", "{image_id}").replace("<job_id>", "{job_id}"), method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(("/api/images", "/api/uploads", "/i/<image_id>.", "/healthz"))
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == set(OPERATIONS)


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=lambda v: getattr(v, "value", v))
def test_operation_conforms_to_the_description(
    app: Flask, path: str, method: str, mode: GenerationMode
) -> None:
    """Schema-valid (positive) and schema-violating (negative) requests; ids are random or the
    stored image's, so both the 404 and the 200 answers are checked."""
    image = upload(app.test_client(), png_bytes())
    operation = schemathesis.openapi.from_wsgi("/api/openapi.json", app)[path][method]
    strategy = operation.as_strategy(mode)
    if "{image_id}" in path:
        stored = operation.as_strategy(mode, path_parameters={"image_id": image["id"]})
        strategy = st.one_of(strategy, stored)
    opaque = mode is GenerationMode.POSITIVE and (path, method) in OPAQUE_INPUTS
    excluded = [schemathesis.checks.positive_data_acceptance] if opaque else []

    @given(case=strategy)
    @EXAMPLES
    def check(case) -> None:
        case.call_and_validate(excluded_checks=excluded)

    check()
    wait_until(lambda: get_gallery(app).uploads.depth == 0)  # uploads answered 202 still encoding
    assert_consistent(get_gallery(app).settings.data)
