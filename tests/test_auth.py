"""Bearer tokens: what is accepted, what is refused, and provisioning."""
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from sqlalchemy import text

from app.auth import mint_token

from conftest import SECRET, table_dump


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**extra):
    now = int(time.time())
    return {"sub": "u-ada", "exp": now + 600, **extra}


def unsigned(payload, alg="none"):
    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(payload)}."


BAD_TOKENS = {
    "expired": lambda: jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, "HS256"),
    "not yet valid": lambda: jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, "HS256"),
    "wrong key": lambda: jwt.encode(claims(), "another-key-of-sufficient-length-000000", "HS256"),
    "alg none": lambda: unsigned(claims()),
    "alg None capitalised": lambda: unsigned(claims(), alg="None"),
    "missing sub": lambda: jwt.encode({"exp": int(time.time()) + 600}, SECRET, "HS256"),
    "missing exp": lambda: jwt.encode({"sub": "u-ada"}, SECRET, "HS256"),
    "numeric sub": lambda: jwt.encode(claims(sub=42), SECRET, "HS256"),
    "sub with control characters": lambda: jwt.encode(claims(sub="u-\x00ada"), SECRET, "HS256"),
    "sub too long": lambda: jwt.encode(claims(sub="u" * 65), SECRET, "HS256"),
    "HS384": lambda: jwt.encode(claims(), SECRET, "HS384"),
    "malformed": lambda: "not.a.token",
    "oversized": lambda: jwt.encode(claims(pad="x" * 6000), SECRET, "HS256"),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_get_401_problem(client, app, kind):
    before = table_dump(app)
    response = client.get(
        "/me/communities", headers={"Authorization": f"Bearer {BAD_TOKENS[kind]()}"}
    )
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["status"] == 401 and response.json["detail"]
    # A refused token provisions nobody.
    assert table_dump(app) == before


def rsa_private_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def hs256_with_key(payload, key):
    """HS256 by hand, so any bytes (a public key PEM) can be the HMAC secret."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}"
    digest = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


def test_hs_rs_confusion_is_refused(client):
    from cryptography.hazmat.primitives import serialization

    private = rsa_private_key()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # A genuine RS256 token, and the confusion attack: HS256 keyed with the
    # public key. The server knows only its HMAC key and pins HS256.
    for forged in (jwt.encode(claims(), private, "RS256"), hs256_with_key(claims(), pem)):
        response = client.get("/me/communities", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401
        assert response.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"],
)
def test_missing_or_other_schemes_get_401(client, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/me/communities", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.content_type == "application/problem+json"


def test_any_standard_library_token_works_and_provisions_the_user(client, app):
    token = jwt.encode(claims(sub="u-new", name="New Person"), SECRET, algorithm="HS256")
    response = client.get("/me/communities", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json["user"] == {"id": "u-new", "name": "New Person"}
    with app.extensions["db"].connect() as connection:
        row = connection.execute(text("SELECT id, name FROM users WHERE id = 'u-new'")).one()
    assert tuple(row) == ("u-new", "New Person")


def test_issuer_and_audience_are_checked_when_configured(app_factory):
    app = app_factory(JWT_ISSUER="https://platform.example", JWT_AUDIENCE="community-sync")
    client = app.test_client()
    good = jwt.encode(
        claims(iss="https://platform.example", aud="community-sync"), SECRET, "HS256"
    )
    wrong_iss = jwt.encode(claims(iss="https://evil.example", aud="community-sync"), SECRET, "HS256")
    no_aud = jwt.encode(claims(iss="https://platform.example"), SECRET, "HS256")
    assert client.get("/me/communities", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    for bad in (wrong_iss, no_aud):
        response = client.get("/me/communities", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401


def test_minted_tokens_carry_the_contract_claims(app):
    with app.app_context():
        token = mint_token("u-ada", name="Ada", admin=True, ttl=60)
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert decoded["sub"] == "u-ada" and decoded["name"] == "Ada" and decoded["adm"] is True
    assert 50 <= decoded["exp"] - time.time() <= 61
