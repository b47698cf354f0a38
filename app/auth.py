"""Bearer-token identity: HS256 JWTs signed with SECRET_KEY, users provisioned on first sight."""
import math
import re
import time
from dataclasses import dataclass

import jwt
from flask import current_app, g, request
from flask.sessions import SessionInterface

from .store import db
from .cache import LRU
from .lanes import Lanes
from .errors import Problem
from .store.models import ID_LENGTH, NAME_LENGTH, User

ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 4096
# Ids travel in URL paths and logs: printable ASCII without '/', '%' or spaces,
# and never the path segments "." and "..", which browsers and proxies resolve
# away (RFC 3986, 5.2.4) before a request could name them. The lookahead is
# valid in Python and in ECMA-262, so the OpenAPI document carries the same rule.
ID_PATTERN = re.compile(r"(?!\.\.?$)[A-Za-z0-9._~:@|+=-]{1,%d}" % ID_LENGTH)
# A user's id is also never "me": /members/me names the caller, so no one
# else could ever manage a user of that name.
CALLER_ALIAS = "me"
ID_CHARACTERS = "1 to 64 characters of A-Z a-z 0-9 . _ ~ : @ | + = -"
ID_RULE = f"{ID_CHARACTERS}, other than '.' and '..'"
USER_ID_RULE = f"{ID_CHARACTERS}, other than '.', '..' and '{CALLER_ALIAS}'"
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# JSON can carry lone surrogates ("\ud800"); no database encoding can store them.
SURROGATE = re.compile(r"[\ud800-\udfff]")
NUMERIC_DATES = ("exp", "nbf", "iat")
# Seconds of clock difference allowed between the platform's hosts and this one.
LEEWAY = 30
DEFAULT_TTL = 3600


@dataclass(frozen=True)
class Identity:
    user_id: str
    name: str | None
    is_admin: bool


def valid_id(value):
    """Whether ``value`` can be an id (of a community or a user) and travel in a URL path."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def valid_user_id(value):
    """Whether ``value`` can be a user's id: an id other than the caller's alias."""
    return valid_id(value) and value != CALLER_ALIAS


def valid_name(value):
    """A display name that fits its column once trimmed: 1 to NAME_LENGTH characters, storable text."""
    return (
        isinstance(value, str)
        and 0 < len(value.strip()) <= NAME_LENGTH
        and not CONTROL.search(value)
        and not SURROGATE.search(value)
    )


def _numeric_date(value):
    """RFC 7519's NumericDate: a JSON number, which a bool or a numeric string is not."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _claims_problem(claims):
    """Why verified ``claims`` cannot be used, or None.

    PyJWT lets through some claims of the wrong type (an ``exp`` of
    "1700000000", an ``iat`` of true): they would fail later, where the
    verified-token cache compares ``exp`` with the clock, on every request.
    """
    for name in NUMERIC_DATES:
        if name in claims and not _numeric_date(claims[name]):
            return f"{name} must be a number of seconds"
    if not valid_user_id(claims.get("sub")):
        return f"sub is not a valid user id ({USER_ID_RULE})"
    if "adm" in claims and not isinstance(claims["adm"], bool):
        return "adm must be true or false"
    if "iss" in claims and not isinstance(claims["iss"], str):
        return "iss must be a string"
    audience = claims.get("aud", "")
    if not isinstance(audience, str) and not (
        isinstance(audience, list) and all(isinstance(item, str) for item in audience)
    ):
        return "aud must be a string or a list of strings"
    return None


def default_ttl():
    """Seconds a token minted here lives unless told otherwise: an hour, or ``TOKEN_MAX_TTL`` if shorter."""
    return min(DEFAULT_TTL, current_app.config["TOKEN_MAX_TTL"])


def mint_token(user_id, name=None, admin=False, ttl=None, key=None):
    """A token for ``user_id``, as the platform that fronts this service would issue.

    ``ttl`` defaults to :func:`default_ttl`; a ValueError for one past
    ``TOKEN_MAX_TTL``: the server would refuse the token.
    """
    config = current_app.config
    ttl = default_ttl() if ttl is None else ttl
    if ttl > config["TOKEN_MAX_TTL"]:
        raise ValueError(f"a token may live at most TOKEN_MAX_TTL ({config['TOKEN_MAX_TTL']}) seconds")
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + int(ttl)}
    if name:
        claims["name"] = name
    if admin:
        claims["adm"] = True
    if config["JWT_ISSUER"]:
        claims["iss"] = config["JWT_ISSUER"]
    if config["JWT_AUDIENCE"]:
        claims["aud"] = config["JWT_AUDIENCE"]
    return jwt.encode(claims, key or config["SECRET_KEY"], algorithm=ALGORITHM)


def _unauthorized(detail, error="invalid_token"):
    challenge = f'Bearer realm="community-sync", error="{error}"'
    if error == "invalid_request":
        challenge = 'Bearer realm="community-sync"'
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


def decode_token(token):
    """Verify ``token`` and return its :class:`Identity`, or raise a 401 Problem.

    A browser sends the same token with every poll for as long as it lives, so
    verified tokens are remembered (bounded) until they expire: the same bytes
    carry the same, already checked, signature.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise _unauthorized("The token is too large.")
    verified = current_app.extensions["verified_tokens"]
    cached = verified.get(token)
    if cached is not None:
        identity, expires = cached
        if time.time() < expires:
            return identity
        verified.pop(token)
    identity, expires = _verify(token)
    verified.put(token, (identity, expires))
    return identity


def _verify(token):
    config = current_app.config
    options = {"require": ["sub", "exp"], "verify_aud": bool(config["JWT_AUDIENCE"])}
    try:
        # algorithms is pinned: "none" and RS/HS confusion are refused by PyJWT.
        claims = jwt.decode(
            token,
            config["SECRET_KEY"],
            algorithms=[ALGORITHM],
            options=options,
            issuer=config["JWT_ISSUER"] or None,
            audience=config["JWT_AUDIENCE"] or None,
            leeway=LEEWAY,
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("The token has expired.") from None
    except jwt.InvalidSignatureError:
        # Most often a token minted where SECRET_KEY was not exported (or differs).
        raise _unauthorized("The token's signature does not match: check that it was signed with "
                            "this server's SECRET_KEY.") from None
    except jwt.InvalidTokenError as error:
        raise _unauthorized(f"The token is not valid: {error}.") from None
    except RecursionError:
        # Header or payload JSON nested deeper than the parser goes: PyJWT
        # turns this into a DecodeError only in its more recent releases.
        raise _unauthorized("The token is not valid: its JSON is nested too deeply.") from None
    problem = _claims_problem(claims)
    if problem:
        raise _unauthorized(f"The token's {problem}.")
    # A token that never expires in practice (an exp of 1e30) cannot be
    # withdrawn short of changing SECRET_KEY for everyone.
    if claims["exp"] - time.time() > config["TOKEN_MAX_TTL"] + LEEWAY:
        raise _unauthorized(f"The token expires further ahead than TOKEN_MAX_TTL "
                            f"({config['TOKEN_MAX_TTL']} seconds) allows.")
    # The name is only for display: one that cannot be stored is left out.
    name = claims.get("name")
    name = name.strip() if valid_name(name) else None
    return Identity(claims["sub"], name, claims.get("adm") is True), claims["exp"]


def authenticate():
    """The caller's identity from ``Authorization: Bearer``; no database work."""
    if "identity" in g:
        return g.identity
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("This endpoint needs an Authorization: Bearer token.", "invalid_request")
    g.identity = decode_token(token.strip())
    # Every authenticated request is a sign of life (app/live/presence.py).
    presence = current_app.extensions.get("presence")
    if presence is not None:
        presence.seen_now(g.identity.user_id)
    return g.identity


def provision(identity):
    """Create the caller's user row the first time its token is seen (``Provisioning``)."""
    current_app.extensions["provisioning"].provision(identity)


class Provisioning:
    """New callers' user rows, written through lanes (``app/lanes.py``).

    This process remembers whom it has provisioned (a bounded LRU), so a known
    user costs no query; a forgotten one is just written again. A new worker
    knows nobody: after a deploy every returning client is new to it, and a
    transaction each would be thousands at once on the pool. One caller is
    written alone; those that arrive while the lanes are busy are written
    together, in one transaction of at most two statements. Each write is a
    transaction of its own, over when this returns: a long poll must not keep
    a connection (or a transaction) through its wait.
    """

    def __init__(self, engine, *, lanes=2, most=2000):
        self.engine = engine
        self.known = LRU()
        self.lanes = Lanes(self._write_alone, self._write_together, lanes=lanes, most=most)

    def provision(self, identity):
        if self.known.get(identity):
            return
        self.lanes(identity)
        self.known.put(identity, True)

    def _write_alone(self, identity):
        self._write_together([identity])

    def _write_together(self, identities):
        """The rows that are absent, and the names that changed. Another request may
        provision the same user meanwhile (its other tabs, an admin adding it): the
        insert then finds the row, and the name still lands."""
        names = {}
        for identity in identities:
            # One row per user: the last name a token of it carried.
            names[identity.user_id] = identity.name or names.get(identity.user_id)
        named = [{"id": user_id, "name": name} for user_id, name in names.items() if name]
        unnamed = [{"id": user_id} for user_id, name in names.items() if not name]
        with db.write_transaction(self.engine) as session:
            if unnamed:
                db.insert_if_absent(session, User, *unnamed)
            if named:
                db.insert_or_update(session, User, named, ["name"])
        return [None] * len(identities)


def current_identity():
    """Authenticate and provision: the usual first line of a view."""
    identity = authenticate()
    provision(identity)
    return identity


class NoCookieSession(SessionInterface):
    """Callers are known by their bearer token alone: Flask's signed-cookie
    session is never opened (it would build a signer for every request, a
    poll's too) and never set. ``flask.session`` is a ``NullSession``, which
    refuses writes."""

    def open_session(self, app, request):
        return None

    def save_session(self, app, session, response):
        pass


def init_app(app):
    app.session_interface = NoCookieSession()
    app.extensions["provisioning"] = Provisioning(app.extensions["db"])
    app.extensions["verified_tokens"] = LRU(capacity=50_000)
