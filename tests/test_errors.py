"""Problem details: every problem type the code can produce is documented, and no other."""
import ast
import re
from pathlib import Path

from app.errors import PROBLEM_TYPE, PROBLEM_TYPES

ROOT = Path(__file__).resolve().parent.parent


def slugs_in_code():
    """Every slug given to Problem(...) or problem_response(...) in the app's source, and every
    kind of the store's refusals (NotFound(...), Forbidden(...), Conflict(...))."""
    found = set()
    for path in [*(ROOT / "app").rglob("*.py"), ROOT / "gunicorn.conf.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            position = {"Problem": 1, "problem_response": 2, "NotFound": 0, "Forbidden": 0,
                        "Conflict": 0}.get(node.func.id)
            if position is None:
                continue
            slug = next((k.value for k in node.keywords if k.arg == "slug"), None)
            if slug is None and len(node.args) > position:
                slug = node.args[position]
            if isinstance(slug, ast.Constant) and isinstance(slug.value, str):
                found.add(slug.value)
    return found


def test_problem_types_keep_their_urn_format():
    assert PROBLEM_TYPE == "urn:community-sync:problem:"


def test_every_problem_type_has_an_entry_in_the_api_reference():
    slugs = slugs_in_code()
    # Raising problems some other way would empty the scan, not fail it.
    assert {"unauthorized", "invalid-cursor", "over-capacity", "database-unavailable"} <= slugs
    section = (ROOT / "docs" / "api.md").read_text().split("\n## Problem types\n", 1)[1]
    documented = set(re.findall(r"^### (\S+)$", section, re.MULTILINE))
    assert slugs - documented == set()
    assert documented - slugs == {"about:blank"}
    # The registry /openapi.json lists them from holds exactly these.
    assert set(PROBLEM_TYPES) == slugs


def test_a_connection_lost_as_it_is_given_back_is_a_503(app_factory, auth, monkeypatch):
    """psycopg2 raises unwrapped when a pooled connection's reset fails: still a passing outage."""
    import psycopg2

    from app.live import admission
    from conftest import assert_problem

    app = app_factory()

    def lost(*_args):
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(admission, "read_alone", lost)
    response = app.test_client().get("/community-changes/poll?timeout=0", headers=auth("u-ada"))
    assert_problem(response, 503)
    assert response.get_json()["type"].endswith("database-unavailable")


def test_titles_are_rfc_9110_reason_phrases(seeded, client, auth):
    """Python's HTTPStatus still has the names RFC 9110 replaced (422, 413, 414, 416)."""
    from app.errors import problem_body, raw_problem

    unprocessable = client.put("/me/presence", json={"visible": "no"}, headers=auth("u-ada"))
    assert unprocessable.status_code == 422 and unprocessable.get_json()["title"] == "Unprocessable Content"
    too_large = client.put("/me/presence", data=b" " * 17000, headers={**auth("u-ada"), "Content-Type": "application/json"})
    assert too_large.status_code == 413 and too_large.get_json()["title"] == "Content Too Large"
    assert problem_body(414, "")["title"] == "URI Too Long"
    assert problem_body(416, "")["title"] == "Range Not Satisfiable"
    assert raw_problem(414).startswith(b"HTTP/1.1 414 URI Too Long\r\n")


def test_the_database_outage_log_names_host_and_port_not_the_password(app_factory, auth, monkeypatch, caplog):
    import psycopg2

    from app.live import admission

    app = app_factory()

    def lost(*_args):
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(admission, "read_alone", lost)
    app.test_client().get("/community-changes/poll?timeout=0", headers=auth("u-ada"))
    logged = " ".join(record.getMessage() for record in caplog.records if "database unavailable" in record.getMessage())
    url = app.extensions["db"].url
    assert logged and (f"{url.host}:{url.port or 5432}" in logged if url.host else url.database in logged)
    assert not url.password or url.password not in logged


def test_the_openapi_document_lists_every_problem_type(client):
    """/docs renders /openapi.json: a reader of it finds the types without docs/api.md."""
    document = client.get("/openapi.json").json
    described = document["info"]["description"]
    problem_type = document["components"]["schemas"]["Problem"]["properties"]["type"]
    for slug, (status, _meaning) in PROBLEM_TYPES.items():
        assert f"`{PROBLEM_TYPE}{slug}` ({status})" in described, slug
    assert set(problem_type["enum"]) == {"about:blank", *(PROBLEM_TYPE + slug for slug in PROBLEM_TYPES)}
