"""The OpenAPI 3.1 description served at ``/openapi.json``.

Operations written by hand, next to the contract they describe; the schemas of
the API's own bodies come from ``app.wire``, where its answers are made. Tests
check that it names every route the app has and no other, and a schemathesis
run checks the app's answers against it.

Longer than most modules because it is one literal: every operation, its
parameters and its answers, in the order of the contract. Split by resource,
the shared error answers and headers would have to travel between files and
the document could no longer be read top to bottom against the contract.
"""
from .. import wire
from ..auth import ID_PATTERN
from ..errors import PROBLEM_TYPE, PROBLEM_TYPES
from ..wire import POLL_STATUSES, ref
from ..watches import MAX_WATCHES, TOPIC

VERSION = "1.0.0"
ID = ID_PATTERN.pattern
PROBLEM = "application/problem+json"


def problem(description, headers=None):
    response = {"description": description, "content": {PROBLEM: {"schema": ref("Problem")}}}
    if headers:
        response["headers"] = headers
    return response


def json_body(schema, description, headers=None):
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def header(description, schema=None):
    return {"description": description, "schema": schema or {"type": "string"}}


RETRY_AFTER = {"Retry-After": header("Seconds to wait before trying again.", {"type": "string"})}
# On every answer to a rate-limited write (draft-ietf-httpapi-ratelimit-headers).
RATE_LIMITED = {
    "RateLimit-Policy": header(
        'The limits this request counted against: `"writes-by-user";q=120;w=60, '
        '"writes-by-address";q=120;w=60`, or `"platform-writes";q=6000;w=60` for platform admins.'),
    "RateLimit": header('What is left of each, and the seconds until more is: `"writes-by-user";r=117;t=42, …`.'),
}
CONDITIONAL_HEADERS = {
    "ETag": header("The state hash as an entity tag."),
    "Cache-Control": header("private, no-cache"),
    "Vary": header("Authorization"),
}

# The answers any authenticated operation may give besides its own.
COMMON_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "431": problem("A header field is too large."),
    "500": problem("An unexpected error; the details are in the server's log."),
    "default": problem("Any other error, as problem details."),
}
WRITE_ERRORS = {
    "400": problem("A malformed id or body."),
    "403": problem("The caller may not make this change."),
    "404": problem("No such community, or a private one the caller is not in."),
    "408": problem("The body did not arrive within REQUEST_BODY_TIMEOUT seconds."),
    "413": problem("The body is larger than 16 KiB."),
    "415": problem("The body is not application/json."),
    "422": problem("The body is JSON but not an acceptable value."),
    "429": problem("Too many writes from this user or address.", {**RETRY_AFTER, **RATE_LIMITED}),
    "503": problem("`write-conflict`: the write met a concurrent one and was rolled back, nothing "
                   "changed; retry it as it is. Or `database-unavailable`.", RETRY_AFTER),
}


def path_parameter(name, description, pattern=ID):
    return {
        "name": name, "in": "path", "required": True, "description": description,
        "schema": {"type": "string", "pattern": f"^{pattern}$"},
    }


COMMUNITY_ID = path_parameter("community_id", "A community id.")
USER_ID = path_parameter("user_id", "A user id, or `me` for the caller.")
FILENAME = {
    "name": "filename", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"},
}
HTML_PAGE = {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}
STATIC_FILE_ANSWERS = {
    "200": {"description": "The file.", "content": {"*/*": {"schema": {}}}},
    "304": {"description": "Not modified."},
    "404": problem("No such file."),
}
IF_NONE_MATCH = {
    "name": "If-None-Match", "in": "header", "required": False,
    "description": "Entity tags from an earlier answer (RFC 9110 weak comparison, lists, `*`).",
    "schema": {"type": "string", "maxLength": 1024},
}
IF_MATCH = {
    "name": "If-Match", "in": "header", "required": False,
    "description": ("The `ETag` of `GET /communities/{community_id}` the change was made against (RFC 9110 "
                    "strong comparison: a weak tag never matches; lists, `*`). Without it the last writer wins."),
    "schema": {"type": "string", "maxLength": 1024},
}
PRECONDITION_FAILED = problem("If-Match names another version: nothing changed.", {
    "ETag": {"description": "The community's current version.", "schema": {"type": "string"}}})


def schemas():
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "enum": ["about:blank", *(PROBLEM_TYPE + slug for slug in PROBLEM_TYPES)]},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
            },
        },
        # The API's own shapes: the same definitions its answers are made from.
        **wire.schemas(),
        "Health": {
            "type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}},
        },
        "Checks": {
            "type": "object",
            "description": "`ok`, or what is wrong.",
            "properties": {"database": {"type": "string"}, "listener": {"type": "string"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {"status": {"const": "ready"}, "checks": ref("Checks")},
        },
        "DemoUsers": {
            "type": "object",
            "required": ["users"],
            "properties": {
                "users": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "name", "admin"],
                        "properties": {
                            "id": {"type": "string"}, "name": {"type": "string"},
                            "admin": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "DemoTokenRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["user_id"],
            "properties": {
                "user_id": {"type": "string"}, "name": {"type": "string"},
                "admin": {"type": "boolean"},
            },
        },
        "DemoPublication": {
            **wire.schemas()["ActivityPublication"],
            "required": ["kind", "ref"],
            "properties": {
                "community_id": {"type": "string", "pattern": f"^{ID}$"},
                "user_id": {"type": "string", "pattern": f"^{ID}$"},
                **wire.schemas()["ActivityPublication"]["properties"],
            },
            "oneOf": [{"required": ["community_id"]}, {"required": ["user_id"]}],
        },
        "DemoToken": {
            "type": "object",
            "required": ["token", "user_id", "expires_in"],
            "properties": {
                "token": {"type": "string"}, "user_id": {"type": "string"},
                "expires_in": {"type": "integer"},
            },
        },
    }


def publishing(operation_id, summary, description, errors, body="Publication"):
    """A platform publishing endpoint: a ``body`` (a ``Publication`` or an ``ActivityPublication``)
    in, ``201`` with what was published."""
    return {
        "operationId": operation_id, "tags": ["activity"],
        "summary": summary, "description": description,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": ref(body)}}},
        "responses": {
            "201": json_body(ref("Published"), "Published.", RATE_LIMITED),
            **errors, **COMMON_ERRORS,
        },
    }


def operations(max_timeout):
    public = {"security": []}
    snapshot_headers = {
        **CONDITIONAL_HEADERS,
        "X-Poll-Interval": header("Advised seconds until the next smart poll.", {"type": "string"}),
    }
    not_modified = {"description": "The state still has this entity tag.", "headers": snapshot_headers}
    return {
        "/healthz": {"get": {
            **public, "operationId": "healthz", "tags": ["operations"],
            "summary": "The process is alive.",
            "responses": {"200": json_body(ref("Health"), "Alive.")},
        }},
        "/readyz": {"get": {
            **public, "operationId": "readyz", "tags": ["operations"],
            "summary": "The database answers and the change listener is connected.",
            "responses": {
                "200": json_body(ref("Readiness"), "Ready for traffic."),
                "503": {
                    "description": "Not ready: problem details whose `checks` say why.",
                    "content": {PROBLEM: {"schema": {"allOf": [ref("Problem"), {
                        "type": "object", "required": ["checks"],
                        "properties": {"checks": ref("Checks")},
                    }]}}},
                },
            },
        }},
        "/metrics": {"get": {
            **public, "operationId": "metrics", "tags": ["operations"],
            "summary": "Prometheus metrics, summed over the server's workers.",
            "responses": {"200": {
                "description": "Prometheus text exposition format 0.0.4.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }},
        }},
        "/openapi.json": {"get": {
            **public, "operationId": "openapi", "tags": ["operations"],
            "summary": "This document.",
            "responses": {"200": json_body({"type": "object"}, "OpenAPI 3.1.")},
        }},
        "/": {"get": {
            **public, "operationId": "demoPage", "tags": ["browser"],
            "summary": "The live demo page.",
            "responses": {"200": HTML_PAGE},
        }},
        "/static/{filename}": {"get": {
            **public, "operationId": "staticFile", "tags": ["browser"],
            "summary": "Static files, among them the browser client `community-sync.js`.",
            "parameters": [FILENAME],
            "responses": STATIC_FILE_ANSWERS,
        }},
        "/static/v/{version}/{filename}": {"get": {
            **public, "operationId": "versionedClientModule", "tags": ["browser"],
            "summary": "The browser client's modules at its package version, cached for a year.",
            "description": (
                "Only the version in `app/static/package.json` exists; its modules "
                "(`community-sync.js`, `community-sync-relay.js`...) never change under it."
            ),
            "parameters": [
                {"name": "version", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9.+-]{1,64}$"}},
                FILENAME,
            ],
            "responses": {
                "200": {
                    "description": "The module.",
                    "headers": {"Cache-Control": header("public, max-age=31536000, immutable")},
                    "content": {"text/javascript": {"schema": {"type": "string"}}},
                },
                "304": STATIC_FILE_ANSWERS["304"],
                "404": problem("Another version, or no such module."),
            },
        }},
        "/docs": {"get": {
            **public, "operationId": "apiDocs", "tags": ["browser"],
            "summary": "This document, rendered for people (Swagger UI).",
            "responses": {"200": HTML_PAGE},
        }},
        "/docs/{filename}": {"get": {
            **public, "operationId": "apiDocsRenderer", "tags": ["browser"],
            "summary": "The scripts and styles of the `/docs` page.",
            "parameters": [FILENAME],
            "responses": STATIC_FILE_ANSWERS,
        }},
        "/me/communities": {"get": {
            "operationId": "snapshot", "tags": ["memberships"],
            "summary": "The caller's communities, their hash and a cursor to follow.",
            "parameters": [IF_NONE_MATCH],
            "responses": {
                "200": json_body(ref("Snapshot"), "The caller's state.", snapshot_headers),
                "304": not_modified,
                **COMMON_ERRORS,
            },
        }},
        "/me/communities/{community_id}/read": {
            "parameters": [COMMUNITY_ID],
            "put": {
                "operationId": "readCommunity", "tags": ["activity"],
                "summary": "Mark the community's activity read, up to now.",
                "description": "Wakes the caller's other polls with a `read` change.",
                "responses": {
                    "200": json_body(ref("MembershipEntry"), "The caller's entry, `unread` 0."),
                    "400": problem("A malformed id."),
                    "404": problem("`not-a-member`: the caller is not a member of it."),
                    **COMMON_ERRORS,
                },
            },
        },
        "/me/presence": {
            "get": {
                "operationId": "getPresenceVisibility", "tags": ["presence"],
                "summary": "Whether the caller shows in presence counts and lists.",
                "responses": {"200": json_body(ref("Visibility"), "The caller's choice."),
                              **COMMON_ERRORS},
            },
            "put": {
                "operationId": "setPresenceVisibility", "tags": ["presence"],
                "summary": "Show or hide the caller in every presence count and list.",
                "description": "Counts follow within PRESENCE_INTERVAL; no poll is woken.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref("VisibilityBody")}}},
                "responses": {
                    "200": json_body(ref("Visibility"), "The caller's choice, as stored."),
                    **{code: WRITE_ERRORS[code] for code in ("400", "408", "413", "415", "422")},
                    **COMMON_ERRORS,
                },
            },
        },
        "/me/typing": {
            "put": {
                "operationId": "startTyping", "tags": ["presence"],
                "summary": "The caller types in a community's topic (members only).",
                "description": (
                    "Shown to the polls that watch the topic (their `typing` map), the caller's own "
                    "excluded, until TYPING_TTL seconds pass without a repeat. Repeats more often "
                    "than the server writes them are accepted and ignored; an invisible caller is "
                    "shown to nobody. Never in the change log nor in `hash`."
                ),
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref("TypingPlace")}}},
                "responses": {
                    "204": {"description": "Typing there (or still)."},
                    "404": problem("`unknown-community`: no such community, or the caller is not a "
                                   "member: the same answer for both."),
                    **{code: WRITE_ERRORS[code] for code in ("400", "408", "413", "415", "422")},
                    **COMMON_ERRORS,
                },
            },
            "delete": {
                "operationId": "stopTyping", "tags": ["presence"],
                "summary": "The caller stopped typing, wherever it was.",
                "responses": {"204": {"description": "Not typing."}, **COMMON_ERRORS},
            },
        },
        "/me/notifications": {"get": {
            "operationId": "listNotifications", "tags": ["activity"],
            "summary": "The caller's notifications, newest first, a page at a time.",
            "parameters": [
                {"name": "cursor", "in": "query", "required": False,
                 "description": "Opaque: `next_cursor` of the previous page.",
                 "schema": {"type": "string", "maxLength": 64}},
                {"name": "limit", "in": "query", "required": False,
                 "description": "How many, 1 to 100 (default 20).",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            ],
            "responses": {
                "200": json_body(ref("NotificationPage"), "A page; `next_cursor` null on the last."),
                "400": problem("A cursor that cannot be decoded, or a bad limit."),
                **COMMON_ERRORS,
            },
        }},
        "/me/notifications/read": {"put": {
            "operationId": "readNotifications", "tags": ["activity"],
            "summary": "Mark the caller's notifications read, up to now.",
            "description": "Wakes the caller's other polls with a `read` change.",
            "responses": {
                "200": json_body(ref("NotificationsRead"), "The unread count after it."),
                **COMMON_ERRORS,
            },
        }},
        "/community-changes/poll": {"get": {
            "operationId": "poll", "tags": ["memberships"],
            "summary": "Wait for changes after a cursor (long poll), or check at once.",
            "description": (
                "Answers at once without a cursor (`reset`), when the hash differs, or when "
                "changes exist after the cursor; otherwise waits up to `timeout` seconds. "
                f"Timeouts above the server's maximum ({max_timeout} s here) are clamped."
            ),
            "parameters": [
                {"name": "cursor", "in": "query", "required": False,
                 "description": "Opaque, from a snapshot or an earlier answer.",
                 "schema": {"type": "string", "maxLength": 4096}},
                {"name": "hash", "in": "query", "required": False,
                 "description": "The client's current state hash.",
                 "schema": {"type": "string", "maxLength": 128}},
                {"name": "timeout", "in": "query", "required": False,
                 "description": "Whole seconds to wait; 0 checks without waiting.",
                 "schema": {"type": "integer", "minimum": 0, "maximum": 999999}},
                {"name": "Prefer", "in": "header", "required": False,
                 "description": "`wait=N` (RFC 7240), used when `timeout` is absent.",
                 "schema": {"type": "string", "maxLength": 256}},
                {"name": "watch", "in": "query", "required": False, "explode": True,
                 "description": (f"A topic to follow, `<community_id>/<topic>` or `<community_id>/*` for "
                                 f"every topic of the community; repeatable, at most {MAX_WATCHES}. A "
                                 "member watches its communities' topics, anyone a public community's."),
                 "schema": {"type": "array", "maxItems": MAX_WATCHES, "items": {
                     "type": "string", "maxLength": 2 * 64 + 1,
                     "pattern": f"^{ID}/(\\*|{TOPIC.pattern})$"}}},
                IF_NONE_MATCH,
            ],
            "responses": {
                "200": json_body(ref("PollAnswer"), "What changed, or nothing.", {
                    "X-Poll-Result": header("changed, unchanged or reset", {"enum": list(POLL_STATUSES)}),
                    "ETag": header("The state hash."),
                    "Cache-Control": header("no-store"),
                    "X-Poll-Interval": header("Advised seconds until the next smart poll."),
                    "Preference-Applied": header("wait=N, when Prefer was honoured."),
                }),
                "400": problem("A cursor that cannot be decoded, a bad timeout or hash, or a malformed "
                               "watch (or more than 20)."),
                "404": problem("A watch of a community that does not exist, or of a private one the "
                               "user is not in: the same answer for both."),
                "429": problem("Too many polls are waiting for this user.", RETRY_AFTER),
                "503": problem("The worker is at capacity or shutting down.", RETRY_AFTER),
                **COMMON_ERRORS,
            },
        }},
        "/communities": {
            "get": {
                "operationId": "listCommunities", "tags": ["communities"],
                "summary": "Public communities and the caller's own (every one for admins).",
                "responses": {"200": json_body(ref("CommunityList"), "The communities."), **COMMON_ERRORS},
            },
            "post": {
                "operationId": "createCommunity", "tags": ["communities"],
                "summary": "Create a community (platform admins).",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref("NewCommunity")}}},
                "responses": {
                    "201": json_body(ref("Community"), "Created.", {
                        "Location": header("The new community's URL."), **RATE_LIMITED}),
                    "409": problem("The id or slug is taken."),
                    **WRITE_ERRORS, **COMMON_ERRORS,
                },
            },
        },
        "/communities/{community_id}": {
            "parameters": [COMMUNITY_ID],
            "get": {
                "operationId": "showCommunity", "tags": ["communities"],
                "summary": "One community with its member count; ETag-conditional.",
                "parameters": [IF_NONE_MATCH],
                "responses": {
                    "200": json_body(ref("CommunityDetail"), "The community.", CONDITIONAL_HEADERS),
                    "304": {"description": "Unchanged.", "headers": CONDITIONAL_HEADERS},
                    "400": problem("A malformed id."),
                    "404": problem("No such community, or a private one the caller is not in."),
                    **COMMON_ERRORS,
                },
            },
            "patch": {
                "operationId": "updateCommunity", "tags": ["communities"],
                "summary": "Change a community (platform admins, its admins and owners).",
                "parameters": [IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref("CommunityPatch")}}},
                "responses": {
                    "200": json_body(ref("Community"), "The community as changed.", {
                        **RATE_LIMITED, "ETag": header("The community's new version.")}),
                    "409": problem("The slug is taken."),
                    "412": PRECONDITION_FAILED,
                    **WRITE_ERRORS, **COMMON_ERRORS,
                },
            },
            "delete": {
                "operationId": "deleteCommunity", "tags": ["communities"],
                "summary": "Delete a community (platform admins).",
                "parameters": [IF_MATCH],
                "responses": {"204": {"description": "Deleted.", "headers": RATE_LIMITED},
                              "412": PRECONDITION_FAILED, **WRITE_ERRORS, **COMMON_ERRORS},
            },
        },
        "/communities/{community_id}/presence": {
            "parameters": [COMMUNITY_ID],
            "get": {
                "operationId": "communityPresence", "tags": ["presence"],
                "summary": "The community's members online now, or reading a topic (members only); "
                           "ETag-conditional.",
                "description": (
                    "`online` counts every visible member online (with `topic`: whose held polls "
                    "watch the topic, by name or by `*`); `users` names the first "
                    "100, longest online first, and `truncated` says whether there are more."
                ),
                "parameters": [IF_NONE_MATCH,
                               {"name": "topic", "in": "query", "required": False,
                                "description": "Who is reading this topic rather than who is online.",
                                "schema": {"type": "string", "pattern": f"^{TOPIC.pattern}$"}}],
                "responses": {
                    "200": json_body(ref("Presence"), "Who is online.", snapshot_headers),
                    "304": {"description": "Unchanged.", "headers": snapshot_headers},
                    "400": problem("A malformed id, or `invalid-topic`."),
                    "404": problem("No such community, or the caller is not a member."),
                    **COMMON_ERRORS,
                },
            },
        },
        "/communities/{community_id}/members/{user_id}": {
            "parameters": [COMMUNITY_ID, USER_ID],
            "put": {
                "operationId": "putMember", "tags": ["communities"],
                "summary": "Add a member or set its role; idempotent.",
                "requestBody": {"required": False, "content": {
                    "application/json": {"schema": ref("MembershipBody")}}},
                "responses": {
                    "200": json_body(ref("Membership"), "Already a member (role set if asked).",
                                     RATE_LIMITED),
                    "201": json_body(ref("Membership"), "Added.",
                                     {"Location": header("The membership."), **RATE_LIMITED}),
                    "409": problem("`last-owner`: the change would demote the community's last owner."),
                    **WRITE_ERRORS, **COMMON_ERRORS,
                },
            },
            "delete": {
                "operationId": "deleteMember", "tags": ["communities"],
                "summary": "Remove a member; idempotent.",
                "responses": {"204": {"description": "Not a member (any more).", "headers": RATE_LIMITED},
                              "409": problem("`last-owner`: the member is the community's last owner."),
                              **WRITE_ERRORS, **COMMON_ERRORS},
            },
        },
        "/communities/{community_id}/members": {
            "parameters": [COMMUNITY_ID],
            "patch": {
                "operationId": "syncMembers", "tags": ["communities"],
                "summary": "Add, re-role and remove many members at once; all or nothing.",
                "description": (
                    "Platform admins and the community's admins and owners. Each entry is "
                    "checked and applied as the single-member `PUT` or `DELETE` would be, all in "
                    "one transaction: one bad or refused entry changes nothing, and its problem "
                    "names the entries (`errors`: `pointer`, `detail`). Bodies up to 128 KiB. "
                    "A rate-limited request, counted once however many entries it carries."
                ),
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref("MembershipSyncBody")}}},
                "responses": {
                    "200": json_body(ref("MembershipSync"), "Applied: how many entries had each outcome.",
                                     RATE_LIMITED),
                    "409": problem("`last-owner`: an entry would remove or demote the last owner."),
                    **WRITE_ERRORS,
                    "413": problem("The body is larger than 128 KiB."),
                    "422": problem("`invalid-entries` (with `errors`), `too-many-entries`, or "
                                   "`invalid-body`: nothing to change, or not an object of lists."),
                    **COMMON_ERRORS,
                },
            },
        },
        "/communities/{community_id}/activity": {
            "parameters": [COMMUNITY_ID],
            "post": publishing(
                "publishActivity", "Publish activity in a community (platform admins).",
                "Without a `topic`, its members' polls carry it and their `unread` counts grow (not "
                "the author's, named by `actor`, nor for a `collapse`d value). With a `topic`, only "
                "the polls watching it carry it, and it is never unread. A `collapse`d value reaches "
                "a poll only as the newest per (community, topic, kind, ref).",
                WRITE_ERRORS, body="ActivityPublication",
            ),
        },
        "/users/{user_id}/notifications": {
            "parameters": [USER_ID],
            "post": publishing(
                "notifyUser", "Publish a notification to one user (platform admins).",
                "An unknown user id is provisioned, as membership writes do.",
                {code: answer for code, answer in WRITE_ERRORS.items() if code != "404"},
            ),
        },
        "/demo/users": {"get": {
            **public, "operationId": "demoUsers", "tags": ["demo"],
            "summary": "The demo users (DEMO_MODE only: not listed here otherwise, and 404).",
            "responses": {
                "200": json_body(ref("DemoUsers"), "The demo users."),
                "404": problem("Demo mode is off."),
                "default": problem("Any other error."),
            },
        }},
        "/demo/tokens": {"post": {
            **public, "operationId": "demoToken", "tags": ["demo"],
            "summary": "A token for one of the demo users (DEMO_MODE only: not listed here otherwise, and 404).",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": ref("DemoTokenRequest")}}},
            "responses": {
                "201": json_body(ref("DemoToken"), "A token.", RATE_LIMITED),
                "404": problem("Demo mode is off."),
                **{code: WRITE_ERRORS[code] for code in ("400", "413", "415", "422", "429")},
                "default": problem("Any other error."),
            },
        }},
        "/demo/sql-activity": {"post": {
            **public, "operationId": "demoSqlActivity", "tags": ["demo"],
            "summary": "Publish with a raw `INSERT INTO activity` (DEMO_MODE, this machine only).",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": ref("DemoPublication")}}},
            "responses": {
                "201": json_body(ref("Published"), "Published.", RATE_LIMITED),
                "403": problem("The request does not come from the server's own machine."),
                "404": problem("Demo mode is off, or no such community."),
                **{code: WRITE_ERRORS[code] for code in ("400", "413", "415", "422", "429")},
                "default": problem("Any other error."),
            },
        }},
    }


def problem_types():
    """The problem types as a Markdown list, for the document's description (Swagger UI renders it)."""
    return "\n".join(f"- `{PROBLEM_TYPE}{slug}` ({status}): {meaning}"
                      for slug, (status, meaning) in PROBLEM_TYPES.items())


def document(app):
    """The OpenAPI document for ``app`` (its limits are read from its config)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "community-sync",
            "version": VERSION,
            "description": (
                "Live community memberships for browser views over plain HTTP: a snapshot, "
                "long polls that answer with what changed, and the writes that change it. "
                "Every 4xx/5xx answer is RFC 9457 problem details, its `type` one of these "
                "(or `about:blank` when the status says all):\n\n" + problem_types()
            ),
        },
        "security": [{"bearer": []}],
        "paths": {
            path: item for path, item in operations(app.config["POLL_MAX_TIMEOUT"]).items()
            # Off, demo mode's routes answer 404 as if they did not exist: so here.
            if app.config["DEMO_MODE"] or not path.startswith("/demo/")
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "HS256 JWT signed with SECRET_KEY; `sub` and `exp` required.",
                },
            },
            "responses": {
                "Unauthorized": problem(
                    "Missing, malformed, expired or badly signed token.",
                    {"WWW-Authenticate": header("Bearer challenge.")},
                ),
            },
            "schemas": schemas(),
        },
    }
