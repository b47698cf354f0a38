"""Bearer tokens: what is accepted, what is refused, and provisioning."""
import base64
import hashlib
import hmac
import json
import time

import gevent
import gevent.event
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


def test_a_token_signed_with_another_key_says_to_check_secret_key(client, app):
    """The usual cause: a terminal minted it without the server's SECRET_KEY exported."""
    token = BAD_TOKENS["wrong key"]()
    detail = client.get("/me/communities", headers={"Authorization": f"Bearer {token}"}).json["detail"]
    assert "SECRET_KEY" in detail
    assert SECRET not in detail and app.config["SECRET_KEY"] not in detail


# Ids a URL path cannot carry: browsers resolve "." and ".." away, and
# "/members/me" names the caller, so a user called "me" could not be managed.
UNADDRESSABLE_SUBS = [".", "..", "me"]


@pytest.mark.parametrize("sub", UNADDRESSABLE_SUBS)
def test_a_sub_no_url_can_address_is_refused(client, app, sub):
    before = table_dump(app)
    token = jwt.encode(claims(sub=sub), SECRET, "HS256")
    response = client.get("/me/communities", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.json
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "sub" in response.json["detail"] and "'me'" in response.json["detail"]
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


def signed(payload):
    """``payload`` signed with the server's key, whatever its claims' types."""
    return hs256_with_key(payload, SECRET.encode())


# Claims a standard library lets through but this service cannot use: each is
# refused on first sight, and stays refused (never cached as valid).
WRONG_CLAIMS = {
    "exp as a numeric string": lambda now: {"exp": str(now + 600)},
    "exp as true": lambda now: {"exp": True},
    "exp as a list": lambda now: {"exp": [now + 600]},
    "nbf as a numeric string": lambda now: {"nbf": str(now - 10)},
    "iat as a numeric string": lambda now: {"iat": str(now)},
    "iat as true": lambda now: {"iat": True},
    "adm as a string": lambda now: {"adm": "true"},
    "adm as a number": lambda now: {"adm": 1},
    "iss as a number": lambda now: {"iss": 7},
    "aud as a list of numbers": lambda now: {"aud": [1, 2]},
    "sub as a list": lambda now: {"sub": ["u-ada"]},
}


@pytest.mark.parametrize("kind", sorted(WRONG_CLAIMS))
def test_claims_of_the_wrong_type_are_refused_every_time(client, app, kind):
    now = int(time.time())
    token = signed({**claims(), **WRONG_CLAIMS[kind](now)})
    before = table_dump(app)
    for _ in range(2):
        response = client.get("/me/communities", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, response.json
        assert response.content_type == "application/problem+json"
    assert table_dump(app) == before


def test_a_fractional_exp_is_a_valid_numeric_date(client):
    token = signed(claims(exp=time.time() + 600.5))
    for _ in range(2):
        assert client.get("/me/communities", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize("exp", [1e30, 2**62, "max + 1 hour"])
def test_a_token_living_longer_than_the_maximum_is_refused(app_factory, exp):
    app = app_factory(TOKEN_MAX_TTL=86400)
    now = time.time()
    exp = now + 86400 + 3600 if exp == "max + 1 hour" else exp
    before = table_dump(app)
    response = app.test_client().get("/me/communities", headers={"Authorization": f"Bearer {signed(claims(exp=exp))}"})
    assert response.status_code == 401 and response.content_type == "application/problem+json"
    assert "TOKEN_MAX_TTL" in response.json["detail"]
    assert table_dump(app) == before
    # At the maximum it is fine.
    at_most = signed(claims(exp=int(now) + 86400))
    assert app.test_client().get("/me/communities", headers={"Authorization": f"Bearer {at_most}"}).status_code == 200


def test_the_default_maximum_is_thirty_days(client):
    month = signed(claims(exp=int(time.time()) + 30 * 86400))
    assert client.get("/me/communities", headers={"Authorization": f"Bearer {month}"}).status_code == 200
    longer = signed(claims(exp=int(time.time()) + 31 * 86400))
    assert client.get("/me/communities", headers={"Authorization": f"Bearer {longer}"}).status_code == 401


def test_tokens_minted_here_stay_within_a_shorter_maximum(app_factory):
    app = app_factory(DEMO_MODE=True, TOKEN_MAX_TTL=600)
    response = app.test_client().post("/demo/tokens", json={"user_id": "u-ada"})
    assert response.status_code == 201 and response.json["expires_in"] == 600
    with app.app_context():
        decoded = jwt.decode(mint_token("u-ada"), SECRET, algorithms=["HS256"])
    assert decoded["exp"] - decoded["iat"] == 600


def stored_name(app, user_id):
    with app.extensions["db"].connect() as connection:
        return connection.execute(text("SELECT name FROM users WHERE id = :id"), {"id": user_id}).scalar()


NAMES = {
    # claim value: the name stored (names that cannot be stored are ignored).
    "a list": (["Ada"], None),
    "a number": (42, None),
    "201 characters": ("a" * 201, None),
    "padded to 300 characters": (" " * 297 + "Ada", "Ada"),
    "200 characters of 4 bytes each": ("\U0001F600" * 200, "\U0001F600" * 200),
    "a lone surrogate": ("Ada \ud800", None),
    "blank": ("   ", None),
}


@pytest.mark.parametrize("kind", sorted(NAMES))
def test_names_are_stored_only_when_they_fit(client, app, kind):
    value, expected = NAMES[kind]
    token = signed(claims(sub="u-named", name=value))
    for _ in range(2):  # the first provisions, the second finds the user
        response = client.get("/me/communities", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.json
    assert response.json["user"] == {"id": "u-named", "name": expected}
    assert stored_name(app, "u-named") == expected


def test_deeply_nested_tokens_are_refused_not_crashed(client, caplog):
    """JSON nested past the parser's recursion limit, in the header or in a signed payload."""
    def raw(text):
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    deep = "[" * 1300 + "]" * 1300  # deeper than Python's recursion limit, under 4 KiB
    in_header = raw('{"alg": "HS256", "x": %s}' % deep) + f".{b64(claims())}.c2ln"
    payload = '{"sub": "u-ada", "exp": %d, "x": %s}' % (time.time() + 600, deep)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{raw(payload)}"
    digest = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    in_payload = f"{signing_input}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"
    for token in (in_header, in_payload):
        assert len(token) <= 4096
        response = client.get("/me/communities", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, response.json
        assert response.content_type == "application/problem+json"
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_no_cookie_session_is_opened_or_set(client, app, auth):
    """Callers are known by their token: Flask's signed-cookie session is never opened."""
    from flask import session
    from flask.sessions import NullSession

    with app.test_request_context("/me/communities", headers={"Cookie": "session=forged"}):
        assert isinstance(session, NullSession)
        with pytest.raises(RuntimeError):
            session["user"] = "u-ada"
    response = client.get("/me/communities", headers={**auth("u-ada"), "Cookie": "session=forged"})
    assert response.status_code == 200 and "Set-Cookie" not in response.headers


def test_callers_first_seen_at_once_are_written_together(app, database, monkeypatch):
    """A new worker (after a deploy) knows nobody: callers arriving at once are written through its
    lanes, at most two writes at once and the rest in one transaction of at most two statements,
    with no connection each; every row and every name lands, one that changed too."""
    from app.auth import Identity
    from conftest import statements

    provisioning = app.extensions["provisioning"]
    lanes, engine = provisioning.lanes, app.extensions["db"]
    go = gevent.event.Event()
    in_flight, most, batches = 0, 0, []

    def held(write, batched=False):
        def run(item):
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                go.wait(5)
                with statements(engine) as seen:
                    result = write(item)
                if batched:
                    # SQLite's BEGIN IMMEDIATE is a statement of its own.
                    batches.append((len(item), len([sql for sql in seen if not sql.startswith("BEGIN")])))
                return result
            finally:
                in_flight -= 1
        return run

    monkeypatch.setattr(lanes, "alone", held(lanes.alone))
    monkeypatch.setattr(lanes, "together", held(lanes.together, batched=True))
    database.psql("INSERT INTO users (id, name) VALUES ('u-known', 'Old name')")
    arriving = [Identity(f"u-new-{n}", f"New {n}" if n % 2 else None, False) for n in range(40)]
    arriving += [Identity("u-known", "New name", False), Identity("u-known", None, False),
                 Identity("u-new-1", None, False)]  # a token without the name another carried
    greenlets = [gevent.spawn(provisioning.provision, identity) for identity in arriving]
    gevent.sleep(0.05)
    assert lanes.running == 2 and len(lanes.queue) == len(arriving) - 2
    go.set()
    gevent.joinall(greenlets, timeout=10, raise_error=True)
    assert most == 2 and batches == [(len(arriving) - 2, 2)]
    with engine.connect() as connection:
        names = dict(connection.execute(text("SELECT id, name FROM users WHERE id LIKE 'u-new-%' OR id = 'u-known'")).all())
    assert names == {"u-known": "New name", **{f"u-new-{n}": f"New {n}" if n % 2 else None for n in range(40)}}
    # Remembered: provisioned again, nobody is written.
    with statements(engine) as seen:
        for identity in arriving:
            provisioning.provision(identity)
    assert seen == []


def test_a_failed_batch_of_new_callers_fails_each_and_frees_its_lane(app, monkeypatch):
    from app.auth import Identity

    provisioning = app.extensions["provisioning"]
    lanes = provisioning.lanes
    go = gevent.event.Event()
    alone = lanes.alone

    def held(identity):
        go.wait(5)
        return alone(identity)

    def lost(_identities):
        raise OSError("the database went away")

    monkeypatch.setattr(lanes, "alone", held)
    monkeypatch.setattr(lanes, "together", lost)
    first = [gevent.spawn(provisioning.provision, Identity(f"u-first-{n}", None, False)) for n in range(2)]
    queued = [gevent.spawn(provisioning.provision, Identity(f"u-queued-{n}", None, False)) for n in range(3)]
    gevent.sleep(0.05)
    go.set()
    gevent.joinall(first, timeout=10, raise_error=True)
    for greenlet in queued:
        with pytest.raises(OSError):
            greenlet.get(timeout=10)
    assert lanes.running == 0 and lanes.queue == []
    # Not remembered: the next request writes it again.
    assert provisioning.known.get(Identity("u-queued-0", None, False)) is None
