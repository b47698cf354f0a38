"""/openapi.json: the document names every route, and the app keeps to it."""
import os
import re
import time
from types import SimpleNamespace

import jwt
import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import create_app
from app.http import openapi
from conftest import SECRET

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def flask_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        routes |= {(path, method) for method in rule.methods & METHODS}
    return routes


def documented_routes(document):
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


def test_the_document_is_openapi_31_with_bearer_jwt(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.content_type == "application/json"
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert document["security"] == [{"bearer": []}]


def test_the_document_passes_the_openapi_validator(client):
    validate(client.get("/openapi.json").get_json())


def test_a_broken_document_fails_the_validator(client):
    document = client.get("/openapi.json").get_json()
    document["paths"]["/healthz"]["get"]["responses"]["200"] = {"content": {}}  # no description
    with pytest.raises(OpenAPIValidationError):
        validate(document)


DEMO_ROUTES = {("/demo/users", "GET"), ("/demo/tokens", "POST"), ("/demo/sql-activity", "POST")}


@pytest.mark.parametrize("demo_mode", [True, False], ids=["demo", "no-demo"])
def test_every_route_is_documented_and_nothing_else(app_factory, demo_mode):
    """Demo mode's routes only when it is on: off, they answer 404 like no route at all."""
    app = app_factory(DEMO_MODE=demo_mode)
    document = app.test_client().get("/openapi.json").get_json()
    assert DEMO_ROUTES <= flask_routes(app)
    assert documented_routes(document) == flask_routes(app) - (set() if demo_mode else DEMO_ROUTES)


def test_public_endpoints_need_no_token_and_the_rest_do(client):
    document = client.get("/openapi.json").get_json()
    public = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/static/{filename}",
              "/static/v/{version}/{filename}", "/docs", "/docs/{filename}",
              "/demo/users", "/demo/tokens", "/demo/sql-activity"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert (operation.get("security") == []) == (path in public), (path, method)
            if path not in public:
                assert "401" in operation["responses"], (path, method)


def test_every_error_response_is_problem_json(client):
    document = client.get("/openapi.json").get_json()
    responses = dict(document["components"]["responses"])
    for item in document["paths"].values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                response = responses.get(response.get("$ref", "").rsplit("/", 1)[-1], response)
                if status == "default" or int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], status


def test_the_document_loads_as_openapi(app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    loaded = {(r.ok().path, r.ok().method.upper()) for r in schema.get_all_operations()}
    # schemathesis leaves out the document's own path.
    assert loaded == flask_routes(app) - {("/openapi.json", "GET")} - DEMO_ROUTES


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """One app for the whole schemathesis run: SQLite, demo data, no waiting, no limits."""
    path = tmp_path_factory.mktemp("schemathesis") / "api.sqlite3"
    app = create_app({
        "TESTING": True, "DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": SECRET,
        "AUTO_MIGRATE": True, "DEMO_MODE": True, "SAFETY_NET_INTERVAL": 0.2,
        # Polls answer at once: the run checks answers, not waiting.
        "POLL_MAX_TIMEOUT": 0, "POLL_DEFAULT_TIMEOUT": 0,
        "RATELIMIT_WRITES": "100000 per minute",
    })
    assert app.test_cli_runner().invoke(args=["seed-demo"]).exit_code == 0
    yield app
    app.extensions["hub"].stop()
    app.extensions["db"].dispose()


@pytest.fixture(scope="module")
def api_schema(live_app):
    return schemathesis.openapi.from_wsgi("/openapi.json", live_app)


@schemathesis.check
def problem_details_for_errors(ctx, response, case):
    """Every 4xx/5xx is application/problem+json with type, title, status and detail."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == "application/problem+json", f"{response.status_code}: {content_type}"
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == response.status_code, body
    return None


# CI runs a fixed, small set; SCHEMATHESIS_MAX_EXAMPLES=500 explores (randomly) further.
EXPLORE = "SCHEMATHESIS_MAX_EXAMPLES" in os.environ
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, problem_details_for_errors]
OPERATIONS = sorted(documented_routes(openapi.document(SimpleNamespace(config={"POLL_MAX_TIMEOUT": 55, "DEMO_MODE": True}))))


def admin_token():
    now = int(time.time())
    return jwt.encode({"sub": "u-admin", "adm": True, "iat": now, "exp": now + 3600}, SECRET,
                      algorithm="HS256")


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_api_keeps_to_its_document(api_schema, path, method):
    """Generated requests, valid and not: no 5xx, every error problem+json, answers as documented."""
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {admin_token()}"}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=not EXPLORE,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ))
    def check(case):
        extra = {} if case.headers and "Authorization" in case.headers else headers
        case.call_and_validate(headers=extra, checks=CHECKS)

    check()


# Listed together under docs/api.md's "Operations" and "Browser and demo", without a heading each.
GROUPED = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/static/", "/demo/")


def test_every_api_operation_has_a_heading_of_its_own_in_the_reference(client):
    """docs/api.md's table of contents reaches each endpoint (activity, notifications, read markers too)."""
    from pathlib import Path

    reference = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    headings = re.findall(r"^#{2,3} .*$", reference, re.MULTILINE)
    missing = [
        f"{method.upper()} {path}"
        for path, operations in client.get("/openapi.json").json["paths"].items()
        if path != "/" and not path.startswith(GROUPED)
        for method in operations if method in ("get", "put", "post", "patch", "delete")
        if not any(method.upper() in heading and f"{path}`" in heading for heading in headings)
    ]
    assert missing == []
