"""Write rate limits: per user and per address, 429 problem+json with Retry-After."""
import os
import socket
from urllib.parse import urlsplit

import pytest


@pytest.fixture
def limited(app_factory):
    app = app_factory(RATELIMIT_WRITES="3 per minute", RATELIMIT_PLATFORM_WRITES="3 per minute")
    app.test_cli_runner().invoke(args=["seed-demo"])
    return app


def put(client, headers, user="me", address="10.0.0.1"):
    return client.put(f"/communities/c-rust/members/{user}", headers=headers,
                      environ_base={"REMOTE_ADDR": address})


def assert_rate_limited(response):
    assert response.status_code == 429
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 429 and body["type"].endswith("rate-limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 61  # a minute, rounded up


def test_writes_are_limited_per_user(limited, auth):
    client = limited.test_client()
    ada = auth("u-ada")
    # From different addresses: the user's own budget runs out.
    for index in range(3):
        assert put(client, ada, address=f"10.0.0.{index}").status_code in (200, 201)
    assert_rate_limited(put(client, ada, address="10.0.0.9"))
    # Someone else is not affected.
    assert put(client, auth("u-alan"), address="10.0.1.1").status_code in (200, 201)


def test_writes_are_limited_per_address(limited, auth):
    client = limited.test_client()
    for index in range(3):
        assert put(client, auth(f"u-{index}"), address="10.0.0.7").status_code in (200, 201)
    assert_rate_limited(put(client, auth("u-other"), address="10.0.0.7"))
    assert put(client, auth("u-other"), address="10.0.0.8").status_code in (200, 201)


def test_every_write_method_counts_and_reads_do_not(limited, auth):
    client = limited.test_client()
    admin = auth("u-admin", admin=True)
    for _ in range(10):
        assert client.get("/communities", headers=admin).status_code == 200
        assert client.get("/me/communities", headers=admin).status_code == 200
        assert client.get("/community-changes/poll?timeout=0", headers=admin).status_code == 200
    assert client.post("/communities", json={"id": "new", "slug": "new", "name": "New"}, headers=admin).status_code == 201
    assert client.patch("/communities/new", json={"name": "Newer"}, headers=admin).status_code == 200
    assert client.delete("/communities/new/members/u-ada", headers=admin).status_code == 204
    assert_rate_limited(client.delete("/communities/new", headers=admin))


def test_bad_tokens_still_answer_401(limited):
    client = limited.test_client()
    response = put(client, {"Authorization": "Bearer nonsense"})
    assert response.status_code == 401


def test_forwarded_addresses_count_only_behind_trusted_proxies(app_factory, auth):
    app = app_factory(RATELIMIT_WRITES="2 per minute", TRUSTED_PROXIES=1)
    app.test_cli_runner().invoke(args=["seed-demo"])
    client = app.test_client()

    def from_client(address, user):
        return client.put("/communities/c-rust/members/me", headers={
            **auth(user), "X-Forwarded-For": address}, environ_base={"REMOTE_ADDR": "10.9.9.9"})

    assert from_client("192.0.2.1", "u-1").status_code in (200, 201)
    assert from_client("192.0.2.1", "u-2").status_code in (200, 201)
    assert_rate_limited(from_client("192.0.2.1", "u-3"))
    # Same balancer, another client behind it.
    assert from_client("192.0.2.2", "u-4").status_code in (200, 201)


def test_forwarded_addresses_are_ignored_without_trusted_proxies(limited, auth):
    client = limited.test_client()
    for index in range(3):
        response = client.put("/communities/c-rust/members/me", headers={
            **auth(f"u-{index}"), "X-Forwarded-For": f"192.0.2.{index}"},
            environ_base={"REMOTE_ADDR": "10.0.0.5"})
        assert response.status_code in (200, 201)
    spoofed = client.put("/communities/c-rust/members/me", headers={
        **auth("u-9"), "X-Forwarded-For": "192.0.2.99"}, environ_base={"REMOTE_ADDR": "10.0.0.5"})
    assert_rate_limited(spoofed)


def redis_url():
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def require_redis():
    """Like the PostgreSQL tests: without Redis a skip, except when CI=true, where a failure."""
    url = urlsplit(redis_url())
    try:
        import redis  # noqa: F401 (the limiter's storage needs it)

        with socket.create_connection((url.hostname, url.port or 6379), timeout=0.5):
            return
    except (ImportError, OSError) as error:
        message = f"Redis at {redis_url()} is not usable: {error}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (required when CI=true)")
    pytest.skip(message)


def test_limits_shared_through_redis_between_processes(app_factory, auth):
    """Two apps (two workers, or two hosts) with one Redis share one budget."""
    require_redis()
    import secrets

    prefix = secrets.token_hex(4)
    apps = [
        app_factory(RATELIMIT_WRITES="3 per minute", RATELIMIT_STORAGE_URI=redis_url(),
                    RATELIMIT_KEY_PREFIX=prefix)
        for _ in range(2)
    ]
    apps[0].test_cli_runner().invoke(args=["seed-demo"])
    clients = [app.test_client() for app in apps]
    ada = auth("u-ada")
    assert put(clients[0], ada).status_code in (200, 201)
    assert put(clients[1], ada).status_code in (200, 201)
    assert put(clients[0], ada).status_code in (200, 201)
    assert_rate_limited(put(clients[1], ada))


# -- RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers) ------------


def fields(response, name):
    """A RateLimit field's items as {policy: {parameter: int}}."""
    items = {}
    for item in response.headers[name].split(","):
        policy, *parameters = item.strip().split(";")
        assert policy.startswith('"') and policy.endswith('"'), item
        items[policy.strip('"')] = {key: int(value) for key, value in (p.split("=") for p in parameters)}
    return items


def test_writes_carry_the_policies_and_what_is_left(limited, auth):
    client = limited.test_client()
    ada = auth("u-ada")
    first = put(client, ada)
    policy = {"q": 3, "w": 60}
    assert fields(first, "RateLimit-Policy") == {"writes-by-user": policy, "writes-by-address": policy}
    assert {name: state["r"] for name, state in fields(first, "RateLimit").items()} == {
        "writes-by-user": 2, "writes-by-address": 2}
    assert all(0 <= state["t"] <= 60 for state in fields(first, "RateLimit").values())
    put(client, auth("u-alan"))  # the same address, another user
    second = put(client, ada, address="10.0.0.1")
    assert {name: state["r"] for name, state in fields(second, "RateLimit").items()} == {
        "writes-by-user": 1, "writes-by-address": 0}
    refused = put(client, ada)
    assert_rate_limited(refused)
    assert fields(refused, "RateLimit")["writes-by-address"]["r"] == 0
    assert 1 <= fields(refused, "RateLimit")["writes-by-address"]["t"] <= 60


def test_reads_and_polls_carry_no_rate_limit_fields(limited, auth):
    client = limited.test_client()
    ada = auth("u-ada")
    for path in ("/me/communities", "/communities", "/communities/c-rust",
                 "/community-changes/poll?timeout=0"):
        response = client.get(path, headers=ada)
        assert response.status_code == 200
        assert "RateLimit" not in response.headers and "RateLimit-Policy" not in response.headers


def test_reads_skip_the_limiters_search_for_limits(limited, auth, monkeypatch):
    """Only writes carry limits: a read, a long poll's arrival included, is not looked up."""
    manager = limited.extensions["ratelimit"].limit_manager
    resolved = []
    resolve = manager.resolve_limits
    monkeypatch.setattr(manager, "resolve_limits", lambda *args: resolved.append(args) or resolve(*args))
    client = limited.test_client()
    ada = auth("u-ada")
    for path in ("/me/communities", "/communities/c-rust", "/community-changes/poll?timeout=0"):
        assert client.get(path, headers=ada).status_code == 200
    assert client.options("/me/communities", headers=ada).status_code < 500
    assert resolved == []
    assert put(client, ada).status_code in (200, 201)
    assert resolved, "a write is looked up"


def test_platform_admins_have_their_own_higher_limit(app_factory, auth):
    app = app_factory(RATELIMIT_WRITES="2 per minute", RATELIMIT_PLATFORM_WRITES="5 per minute")
    app.test_cli_runner().invoke(args=["seed-demo"])
    client = app.test_client()
    admin = auth("u-admin", admin=True)
    for index in range(4):
        response = put(client, admin, user=f"u-{index}")
        assert response.status_code == 201
        assert fields(response, "RateLimit-Policy") == {"platform-writes": {"q": 5, "w": 60}}
        assert fields(response, "RateLimit")["platform-writes"]["r"] == 4 - index
    # A bulk change counts once, however many entries it carries.
    bulk = client.patch("/communities/c-rust/members", headers=admin, environ_base={"REMOTE_ADDR": "10.0.0.1"},
                        json={"add": [{"user_id": f"u-bulk-{i}"} for i in range(50)]})
    assert bulk.status_code == 200 and bulk.json["created"] == 50
    assert fields(bulk, "RateLimit")["platform-writes"]["r"] == 0
    assert_rate_limited(put(client, admin, user="u-late"))
    # The platform's writes used nothing of the browsers' budgets at that address.
    assert put(client, auth("u-ada")).status_code in (200, 201)
    assert put(client, auth("u-alan")).status_code in (200, 201)
    assert_rate_limited(put(client, auth("u-grace")))


def test_browsers_do_not_use_the_platform_limit(app_factory, auth):
    app = app_factory(RATELIMIT_WRITES="2 per minute", RATELIMIT_PLATFORM_WRITES="100 per minute")
    app.test_cli_runner().invoke(args=["seed-demo"])
    client = app.test_client()
    grace = auth("u-grace")  # an admin of c-design: may sync it, but is a browser's user
    for _ in range(2):
        response = client.patch("/communities/c-design/members", headers=grace,
                                json={"add": [{"user_id": "u-new"}]})
        assert response.status_code == 200
        assert set(fields(response, "RateLimit-Policy")) == {"writes-by-user", "writes-by-address"}
    assert_rate_limited(client.patch("/communities/c-design/members", headers=grace,
                                     json={"add": [{"user_id": "u-new"}]}))


def test_browsers_on_allowed_origins_may_read_the_fields(app_factory, auth):
    app = app_factory(CORS_ORIGINS="https://ok.example")
    app.test_cli_runner().invoke(args=["seed-demo"])
    response = app.test_client().put("/communities/c-rust/members/me",
                                     headers={**auth("u-ada"), "Origin": "https://ok.example"})
    assert response.status_code == 200 and "RateLimit" in response.headers
    exposed = {name.strip() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"RateLimit-Policy", "RateLimit"} <= exposed
