"""The demo's users, communities and memberships (``flask seed-demo``, the demo page)."""
from .models import Community, Membership, User

USERS = [
    ("u-ada", "Ada Lovelace", False),
    ("u-grace", "Grace Hopper", False),
    ("u-alan", "Alan Turing", False),
    ("u-admin", "Demo Admin", True),
]
COMMUNITIES = [
    ("c-rust", "rust", "Rust", True),
    ("c-python", "python", "Python", True),
    ("c-go", "go", "Go", True),
    ("c-design", "design", "Design Guild", False),
    ("c-ops", "ops", "Ops On-Call", False),
]
MEMBERSHIPS = [
    ("u-ada", "c-rust", "member"),
    ("u-ada", "c-python", "moderator"),
    ("u-grace", "c-python", "owner"),
    ("u-grace", "c-design", "admin"),
    ("u-alan", "c-go", "member"),
]


def seed(session):
    """Load the demo data in ``session`` (idempotent: what exists is left as it is)."""
    for user_id, name, _admin in USERS:
        session.merge(User(id=user_id, name=name))
    for community_id, slug, name, public in COMMUNITIES:
        if session.get(Community, community_id) is None:
            session.add(Community(id=community_id, slug=slug, name=name, is_public=public))
    session.flush()
    for user_id, community_id, role in MEMBERSHIPS:
        if session.get(Membership, (user_id, community_id)) is None:
            session.add(Membership(user_id=user_id, community_id=community_id, role=role))
