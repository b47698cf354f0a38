"""Bad input and hostile callers: tokens, other users' data, sizes, headers, CORS, demo."""
import base64
import hashlib
import hmac
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.store import cursors
from app import settings
from conftest import SECRET, assert_problem, bearer

ROOT = Path(__file__).resolve().parent.parent

PROTECTED = [
    ("GET", "/me/communities"),
    ("GET", "/community-changes/poll?timeout=0"),
    ("GET", "/communities"),
    ("GET", "/communities/c-rust"),
    ("POST", "/communities"),
    ("PATCH", "/communities/c-rust"),
    ("DELETE", "/communities/c-rust"),
    ("PUT", "/communities/c-rust/members/me"),
    ("DELETE", "/communities/c-rust/members/me"),
]


def claims(**extra):
    now = int(time.time())
    base = {"sub": "u-ada", "iat": now, "exp": now + 600}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def unsigned(payload, header=None):
    """A token with ``alg: none`` (or another header) and no signature."""
    def part(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header or {'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def rsa_keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public


BAD_TOKENS = {
    "expired": lambda: jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256"),
    "not yet valid": lambda: jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256"),
    "issued in the future": lambda: jwt.encode(claims(iat=int(time.time()) + 3600), SECRET,
                                               algorithm="HS256"),
    "wrong key": lambda: jwt.encode(claims(), "another-key-of-sufficient-length-0123456789",
                                    algorithm="HS256"),
    "alg none": lambda: unsigned(claims()),
    "alg none uppercase": lambda: unsigned(claims(), {"alg": "NONE", "typ": "JWT"}),
    "HS512 with the key": lambda: jwt.encode(claims(), SECRET, algorithm="HS512"),
    "RS256": lambda: jwt.encode(claims(), rsa_keys()[0], algorithm="RS256"),
    "missing sub": lambda: jwt.encode(claims(sub=None), SECRET, algorithm="HS256"),
    "missing exp": lambda: jwt.encode(claims(exp=None), SECRET, algorithm="HS256"),
    "sub not a string": lambda: jwt.encode(claims(sub=12), SECRET, algorithm="HS256"),
    "sub with a slash": lambda: jwt.encode(claims(sub="u/../admin"), SECRET, algorithm="HS256"),
    "empty sub": lambda: jwt.encode(claims(sub=""), SECRET, algorithm="HS256"),
    "oversized": lambda: jwt.encode(claims(pad="x" * 6000), SECRET, algorithm="HS256"),
    "garbage": lambda: "not-a-token",
    "truncated": lambda: jwt.encode(claims(), SECRET, algorithm="HS256")[:-10],
    "signature stripped": lambda: jwt.encode(claims(), SECRET, algorithm="HS256").rsplit(".", 1)[0] + ".",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_everywhere(client, kind):
    token = BAD_TOKENS[kind]()
    for method, path in PROTECTED:
        response = client.open(path, method=method, headers={"Authorization": f"Bearer {token}"},
                               json={"role": "member"} if method in ("PUT", "PATCH", "POST") else None)
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_hs_rs_confusion_with_the_public_key_as_secret(client):
    """A token HMAC-signed with an RSA public key (the classic confusion) is refused."""
    _key, public = rsa_keys()
    header, payload = unsigned(claims(), {"alg": "HS256", "typ": "JWT"}).split(".")[:2]
    signature = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert_problem(client.get("/me/communities", headers={"Authorization": f"Bearer {token}"}), 401)


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic dTpw", "Token abc", "bearer"])
def test_missing_or_malformed_authorization(client, header):
    response = client.get("/me/communities", headers={"Authorization": header} if header else {})
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_good_token_works(client, auth):
    assert client.get("/me/communities", headers=auth("u-ada")).status_code == 200


def decoded_cursor(cursor):
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


def test_no_cursor_reaches_another_users_data(seeded, client, auth):
    """Ada's cursors, replayed or forged by Alan, only ever show Alan's own state."""
    ada, alan = auth("u-ada"), auth("u-alan")
    snapshot = client.get("/me/communities", headers=ada).get_json()
    first = client.get("/community-changes/poll?timeout=0", headers=ada).get_json()
    # Ada's communities change after her cursor.
    client.put("/communities/c-go/members/me", headers=ada)
    client.delete("/communities/c-rust/members/me", headers=ada)

    alan_ids = {c["id"] for c in client.get("/me/communities", headers=alan).get_json()["communities"]}
    assert alan_ids == {"c-go"}
    key = seeded.extensions["cursor_key"]
    epoch = key.decode(snapshot["cursor"]).epoch
    # Signed with the server's own key: what the server reads must not
    # depend on the cursor being one it issued to this user.
    forged = [snapshot["cursor"], first["cursor"]] + [
        key.encode(cursors.Cursor(epoch, cursors.parse_position(position)))
        for position in ("0", "1:1:", "0:1:", "1", "3:3:")
    ]
    for cursor in forged:
        response = client.get(f"/community-changes/poll?timeout=0&cursor={cursor}", headers=alan)
        if response.status_code == 400:
            continue  # not a position of this backend
        answer = response.get_json()
        assert response.status_code == 200
        for change in answer.get("changes", []):
            assert change["community_id"] == "c-go" or change["by"] == "u-alan", change
            assert change["by"] != "u-ada", change
        if "communities" in answer:
            assert {c["id"] for c in answer["communities"]} == alan_ids


def test_cursors_carry_no_user_or_community(seeded, client, auth):
    for user in ("u-ada", "u-grace"):
        body = client.get("/me/communities", headers=auth(user)).get_json()
        raw = decoded_cursor(body["cursor"])
        assert user not in raw and "c-" not in raw
        assert raw.split("|")[0] == "2"


def test_private_communities_are_hidden_from_outsiders(seeded, client, auth):
    outsider = client.get("/communities/c-design", headers=auth("u-alan"))
    assert_problem(outsider, 404)
    missing = client.get("/communities/c-nope", headers=auth("u-alan"))
    assert outsider.get_json()["detail"].replace("c-design", "X") == \
        missing.get_json()["detail"].replace("c-nope", "X")
    listed = client.get("/communities", headers=auth("u-alan")).get_json()["communities"]
    assert "c-design" not in {c["id"] for c in listed}


@pytest.mark.parametrize("path", [
    "/communities/bad%20id", "/communities/" + "x" * 65, "/communities/%00",
    "/communities/a%2Fb/members/me", "/communities/c-rust/members/bad%25id",
    "/communities/c-rust/members/" + "u" * 65,
])
def test_ids_are_validated(seeded, client, auth, path):
    method = "PUT" if "/members/" in path else "GET"
    response = client.open(path, method=method, headers=auth("u-admin", admin=True))
    assert response.status_code in (400, 404)
    assert response.content_type == "application/problem+json"


def test_oversized_bodies_are_refused(seeded, client, auth):
    big = json.dumps({"slug": "big", "name": "x" * 20000})
    response = client.post("/communities", data=big, content_type="application/json",
                           headers=auth("u-admin", admin=True))
    assert_problem(response, 413)


def test_oversized_chunked_bodies_are_refused(seeded, client, auth):
    """No Content-Length to check up front: the limit applies while reading."""
    body = io.BytesIO(b" " * 40_000 + b"{}")
    response = client.post(
        "/communities", input_stream=body,
        headers={**auth("u-admin", admin=True), "Content-Type": "application/json",
                 "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_problem(response, 413)


DEEP_JSON = "[" * 5000 + "]" * 5000  # within the body limit, past the parser's recursion


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/communities/c-go/members/me"),
    ("POST", "/communities"),
    ("PATCH", "/communities/c-rust"),
    ("POST", "/demo/tokens"),
])
def test_deeply_nested_json_bodies_are_malformed_not_crashes(app_factory, auth, caplog, method, path):
    client = app_factory(DEMO_MODE=True).test_client()
    client.application.test_cli_runner().invoke(args=["seed-demo"])
    for body in (DEEP_JSON, '{"role": %s}' % DEEP_JSON):
        response = client.open(path, method=method, data=body, content_type="application/json",
                               headers=auth("u-admin", admin=True))
        problem = assert_problem(response, 400)
        assert problem["type"].endswith(":malformed-json")
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_oversized_headers_are_refused(client, auth):
    response = client.get("/me/communities", headers={**auth("u-ada"), "X-Filler": "x" * 9000})
    assert_problem(response, 431)
    many = {f"X-Filler-{i}": "y" * 4000 for i in range(10)}
    assert_problem(client.get("/healthz", headers=many), 431)


def test_security_headers_on_every_kind_of_answer(seeded, client, auth):
    responses = [
        client.get("/healthz"),
        client.get("/metrics"),
        client.get("/openapi.json"),
        client.get("/"),
        client.get("/static/community-sync.js"),
        client.get("/me/communities", headers=auth("u-ada")),
        client.get("/me/communities"),
        client.get("/nowhere"),
        client.delete("/healthz"),
        client.post("/communities", data="{", content_type="application/json",
                    headers=auth("u-admin", admin=True)),
    ]
    etag = responses[5].headers["ETag"]
    responses.append(client.get("/me/communities", headers={**auth("u-ada"), "If-None-Match": etag}))
    assert responses[-1].status_code == 304
    for response in responses:
        response.close()
        assert response.headers["X-Content-Type-Options"] == "nosniff", response
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Request-ID"]
        if response.status_code >= 400:
            assert response.content_type == "application/problem+json"


def test_cors_only_for_the_allowlist(app_factory, auth):
    app = app_factory(CORS_ORIGINS=" https://ok.example, https://also.example ")
    client = app.test_client()
    allowed = client.get("/healthz", headers={"Origin": "https://ok.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
    refused = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in refused.headers
    preflight = client.options("/communities/c-1/members/me", headers={
        "Origin": "https://also.example", "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization, content-type",
    })
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://also.example"
    assert "PUT" in preflight.headers["Access-Control-Allow-Methods"]
    edit = client.options("/communities/c-1", headers={
        "Origin": "https://ok.example", "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, content-type, if-match",
    })
    assert "if-match" in edit.headers["Access-Control-Allow-Headers"].lower()
    assert "PATCH" in edit.headers["Access-Control-Allow-Methods"]
    evil_preflight = client.options("/communities/c-1/members/me", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "PUT",
    })
    assert "Access-Control-Allow-Origin" not in evil_preflight.headers


def test_no_cors_without_an_allowlist(client):
    response = client.get("/healthz", headers={"Origin": "https://ok.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_demo_tokens_cannot_be_minted_when_demo_mode_is_off(client):
    for response in (
        client.post("/demo/tokens", json={"user_id": "u-admin"}),
        client.get("/demo/users"),
    ):
        assert_problem(response, 404)
    assert b"token" not in client.post("/demo/tokens", json={"user_id": "u-admin"}).data


def test_demo_tokens_only_for_demo_users_when_on(app_factory):
    client = app_factory(DEMO_MODE=True).test_client()
    assert client.post("/demo/tokens", json={"user_id": "u-ada"}).status_code == 201
    assert_problem(client.post("/demo/tokens", json={"user_id": "u-root", "admin": True}), 422)


def test_demo_tokens_never_carry_admin_rights(app_factory):
    client = app_factory(DEMO_MODE=True).test_client()
    client.application.test_cli_runner().invoke(args=["seed-demo"])
    minted = client.post("/demo/tokens", json={"user_id": "u-admin", "admin": True})
    assert minted.status_code == 201
    token = minted.get_json()["token"]
    assert "adm" not in jwt.decode(token, SECRET, algorithms=["HS256"])
    headers = {"Authorization": f"Bearer {token}"}
    assert_problem(client.put("/communities/c-go/members/u-ada", headers=headers), 403)
    # Without admin rights, a private community it is not in does not exist for it.
    assert_problem(client.put("/communities/c-ops/members/u-ada", headers=headers), 404)
    assert_problem(client.post("/communities", json={"slug": "x", "name": "X"}, headers=headers), 403)


def page_admin_token(response):
    match = re.search(r'data-admin-token="([^"]*)"', response.get_data(as_text=True))
    return match.group(1)


def test_the_demo_page_carries_the_admin_token_only_on_the_servers_machine(app_factory):
    client = app_factory(DEMO_MODE=True).test_client()
    local = client.get("/", base_url="http://127.0.0.1:8000")
    assert jwt.decode(page_admin_token(local), SECRET, algorithms=["HS256"])["adm"] is True
    assert local.headers["Cache-Control"] == "no-store"
    assert page_admin_token(client.get("/", base_url="http://[::1]:8000",
                                       environ_base={"REMOTE_ADDR": "::1"}))
    elsewhere = [
        client.get("/", environ_base={"REMOTE_ADDR": "192.0.2.7"}),
        client.get("/", headers={"X-Forwarded-For": "192.0.2.7"}),
        client.get("/", headers={"Forwarded": "for=192.0.2.7"}),
        # DNS rebinding: a browser reaches 127.0.0.1 under another site's name.
        client.get("/", base_url="http://evil.example:8000"),
    ]
    for response in elsewhere:
        assert response.status_code == 200 and page_admin_token(response) == ""
    off = app_factory(DEMO_MODE=False).test_client().get("/", base_url="http://127.0.0.1:8000")
    assert page_admin_token(off) == ""


@pytest.mark.parametrize(("addresses", "warns"), [
    ([("127.0.0.1", 8000)], False),
    ([("localhost", 8000), ("::1", 8000)], False),
    ([("0.0.0.0", 8000)], True),
    ([("127.0.0.1", 8000), ("192.0.2.1", 8000)], True),
    ([("", 8000)], True),
    (["/run/community-sync.sock"], True),
])
def test_demo_mode_beyond_loopback_is_warned_about(addresses, warns):
    warning = settings.exposure_warning({"DEMO_MODE": True}, addresses)
    assert bool(warning) is warns
    assert settings.exposure_warning({"DEMO_MODE": False}, addresses) is None


def test_gunicorn_logs_the_demo_warning_from_its_config(tmp_path):
    """The hook in gunicorn.conf.py, with a worker as gunicorn passes it."""
    script = """
import runpy, types
from app import create_app
warnings = []
app = create_app({"DEMO_MODE": True, "DATABASE_URL": "sqlite:///%s", "SECRET_KEY": "k" * 40})
worker = types.SimpleNamespace(
    wsgi=app, cfg=types.SimpleNamespace(address=[("0.0.0.0", 8000)], graceful_timeout=1),
    log=types.SimpleNamespace(warning=warnings.append))
app.extensions.pop("hub").stop()
runpy.run_path("gunicorn.conf.py")["post_worker_init"](worker)
print(warnings)
""" % (tmp_path / "db.sqlite3")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "DEMO MODE IS ON" in result.stdout and "0.0.0.0:8000" in result.stdout


def test_demo_token_requests_with_a_non_string_user_id(app_factory):
    client = app_factory(DEMO_MODE=True).test_client()
    assert_problem(client.post("/demo/tokens", json={"user_id": {"a": 1}}), 422)


def test_unexpected_errors_leak_nothing(app, client):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    body = assert_problem(client.get("/boom"), 500)
    assert "secret internals" not in json.dumps(body)


# -- a real gunicorn, spoken to over raw sockets -----------------------------------


def raw_exchange(server, data, wait=10):
    """Send ``data`` and read until the server closes or ``wait`` seconds pass."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pytest.fail(f"the server neither answered nor closed within {wait} s: {received!r}")
    return received


def http_head(received):
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


# framing: (header, half a body, the answer without a token). A chunked body is
# read before authentication (to refuse one over the size limit).
HALF_BODIES = {
    "content-length": (b"Content-Length: 100\r\n", b'{"role": "mem', 401),
    "chunked": (b"Transfer-Encoding: chunked\r\n", b'20\r\n{"role": "mem', 408),
}


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("framing", sorted(HALF_BODIES))
def test_half_a_body_is_timed_out(server_factory, database, framing):
    server = server_factory(database, REQUEST_BODY_TIMEOUT="1")
    header, partial, anonymous = HALF_BODIES[framing]
    start = (b"PUT /communities/c-go/members/me HTTP/1.1\r\nHost: x\r\n"
             b"Content-Type: application/json\r\n" + header)
    authorization = f"Authorization: {bearer('u-ada')['Authorization']}\r\n".encode()
    # Read by the application: 408, then the connection closes.
    status, headers, body = http_head(raw_exchange(server, start + authorization + b"\r\n" + partial))
    assert status == 408, body
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["type"].endswith(":request-timeout")
    # Without a token: answered (read or not), and the connection closes all the same.
    status, _headers, body = http_head(raw_exchange(server, start + b"\r\n" + partial))
    assert status == anonymous, body


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_body_deadline_spares_keep_alive_and_long_polls(server_factory, database):
    import requests

    server = server_factory(database, REQUEST_BODY_TIMEOUT="1")
    with requests.Session() as session:
        headers = bearer("u-ada")
        assert session.get(server.url + "/healthz").status_code == 200
        time.sleep(1.5)  # idle on the kept-alive connection, past the body deadline
        put = session.put(server.url + "/communities/c-nope/members/me", json={"role": "member"},
                          headers=headers)
        assert put.status_code == 404, put.text
        poll = session.get(server.url + "/community-changes/poll", headers=headers, timeout=10)
        cursor, state = poll.json()["cursor"], poll.json()["hash"]
        # A wait longer than the deadline reads nothing and answers as usual.
        waited = session.get(server.url + "/community-changes/poll", headers=headers, timeout=10,
                             params={"cursor": cursor, "hash": state, "timeout": 2})
        assert waited.status_code == 200 and waited.json()["status"] == "unchanged"


SERVER_REFUSALS = {
    "not HTTP": (b"GARBAGE\r\n\r\n", 400),
    "bad header name": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
    "request line over 8 KiB": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "a header over 16 KiB": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n", 431),
    "over 100 headers": (b"GET /healthz HTTP/1.1\r\n"
                         + b"".join(b"X-H%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_servers_own_refusals_are_problem_json(server_factory, database):
    from app.observability import SECURITY_HEADERS

    server = server_factory(database)
    for kind, (request, expected) in SERVER_REFUSALS.items():
        status, headers, body = http_head(raw_exchange(server, request))
        assert status == expected, (kind, body)
        assert headers["content-type"] == "application/problem+json", kind
        problem = json.loads(body)
        assert problem["status"] == expected and problem["title"] and problem["detail"], kind
        assert problem["type"] == "about:blank"
        for name, value in SECURITY_HEADERS.items():
            assert headers[name.lower()] == value, (kind, name)
        assert b"<html" not in body
