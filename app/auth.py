"""Bearer-token identity: HS256 JWTs signed with SECRET_KEY, users provisioned on first sight."""
import re
import time
from dataclasses import dataclass

import jwt
from flask import current_app, g, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import db
from .cache import LRU
from .errors import Problem
from .models import ID_LENGTH, User

ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 4096
NAME_LENGTH = 200
# Ids travel in URL paths and logs: printable ASCII without '/', '%' or spaces.
ID_PATTERN = re.compile(r"[A-Za-z0-9._~:@|+=-]{1,%d}" % ID_LENGTH)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Identity:
    user_id: str
    name: str | None
    is_admin: bool


def valid_id(value):
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def valid_name(value):
    return (
        isinstance(value, str)
        and 0 < len(value.strip()) <= NAME_LENGTH
        and not CONTROL.search(value)
    )


def mint_token(user_id, name=None, admin=False, ttl=3600, key=None):
    """A token for ``user_id``, as the platform that fronts this service would issue."""
    config = current_app.config
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
            leeway=30,
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("The token has expired.") from None
    except jwt.InvalidTokenError as error:
        raise _unauthorized(f"The token is not valid: {error}.") from None
    subject = claims.get("sub")
    if not valid_id(subject):
        raise _unauthorized("The token's sub is not a valid user id.")
    name = claims.get("name")
    if name is not None and not valid_name(name):
        name = None
    return Identity(subject, name, claims.get("adm") is True), claims["exp"]


def authenticate():
    """The caller's identity from ``Authorization: Bearer``; no database work."""
    if "identity" in g:
        return g.identity
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("This endpoint needs an Authorization: Bearer token.", "invalid_request")
    g.identity = decode_token(token.strip())
    return g.identity


def provision(identity):
    """Create the caller's user row the first time its token is seen.

    This process remembers whom it has provisioned (a bounded LRU), so a known
    user costs no query; a forgotten one is just checked again.
    """
    cache = current_app.extensions["provisioned"]
    if cache.get(identity):
        return
    # A session of its own, closed here: a long poll must not keep a
    # connection (or a transaction) through its wait.
    with Session(db.engine()) as session:
        user = session.get(User, identity.user_id)
        if user is None:
            session.add(User(id=identity.user_id, name=identity.name))
        elif identity.name and user.name != identity.name:
            user.name = identity.name
        try:
            session.commit()
        except IntegrityError:
            # Another request provisioned the same user concurrently.
            session.rollback()
            if session.scalar(select(User.id).where(User.id == identity.user_id)) is None:
                raise
    cache.put(identity, True)


def current_identity():
    """Authenticate and provision: the usual first line of a view."""
    identity = authenticate()
    provision(identity)
    return identity


def init_app(app):
    app.extensions["provisioned"] = LRU()
    app.extensions["verified_tokens"] = LRU(capacity=50_000)
