"""Bad input and hostile callers: tokens, other users' data, sizes, headers, CORS, demo."""
import base64
import hashlib
import hmac
import io
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import SECRET

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


def assert_problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    assert "Traceback" not in response.get_data(as_text=True)
    return body


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
    epoch = decoded_cursor(snapshot["cursor"]).split("|")[1]
    forged = [snapshot["cursor"], first["cursor"]] + [
        base64.urlsafe_b64encode(f"1|{epoch}|{position}".encode()).decode().rstrip("=")
        for position in ("s0", "x1:1:", "x0:1:", "s1", "x3:3:")
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
        assert raw.split("|")[0] == "1"


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


def test_demo_token_requests_with_a_non_string_user_id(app_factory):
    client = app_factory(DEMO_MODE=True).test_client()
    assert_problem(client.post("/demo/tokens", json={"user_id": {"a": 1}}), 422)


def test_unexpected_errors_leak_nothing(app, client):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    body = assert_problem(client.get("/boom"), 500)
    assert "secret internals" not in json.dumps(body)
