// Conflict-safe community edits: getCommunity() reads a version, updateCommunity() changes
// the community only while it is at that version, and a 412 rejects as a conflict.
import { test } from "node:test";
import assert from "node:assert/strict";

import { decisions } from "./client.mjs";
import { json, rust, snapshot, start, withCalls } from "./support.mjs";

const { SyncError, checkIfMatch, communityResult, communityUpdateRequest, communityUrl } = decisions;

const community = { id: "c-rust", slug: "rust", name: "Rust", logo_url: null, is_public: true };
const detail = { ...community, member_count: 3 };
const conflict = (current) =>
  json(
    {
      type: "urn:community-sync:problem:precondition-failed",
      title: "Precondition Failed",
      status: 412,
      detail: "The community is no longer at the version If-Match names.",
    },
    { status: 412, headers: { "Content-Type": "application/problem+json", ...(current ? { ETag: current } : {}) } },
  );

/** A read response as the client hands it to the decisions: `{status, statusText, headers, body}`. */
const answer = (status, body, headers = {}) => ({ status, statusText: "", headers: new Headers(headers), body });

// --- the pure parts ----------------------------------------------------------

test("communityUpdateRequest is a PATCH of the fields, naming the version in If-Match", () => {
  const fields = { name: "Rust (archive)", logo_url: null };
  const request = communityUpdateRequest("https://sync.example.com/", "c-rust", fields, { ifMatch: '"v1"' });
  assert.deepEqual(request, {
    method: "PATCH",
    url: "https://sync.example.com/communities/c-rust",
    headers: { "If-Match": '"v1"' },
    payload: { name: "Rust (archive)", logo_url: null },
  });
  assert.notEqual(request.payload, fields, "a copy: changing the app's object later changes nothing sent");
  assert.equal(communityUpdateRequest("", "a:b|c", {}, { ifMatch: "*" }).url, "/communities/a%3Ab%7Cc");
  assert.equal(communityUrl("http://api.test//", "c-1"), "http://api.test/communities/c-1");
});

test("checkIfMatch takes an ETag as the server sent it, or *", () => {
  for (const value of ['"v1"', '"3f9a0c"', '""', "*", '"a,b"']) assert.equal(checkIfMatch(value), value);
  const refused = [
    [undefined, /ifMatch is required/],
    [null, /ifMatch is required.*did not reach the page/],
    ['W/"v1"', /weak ETag: the server never matches one/],
    ["v1", /quotes included/],
    ['"v 1"', /quotes included/],
    ['"v1", "v2"', /quotes included/],
    ['"v1"\r\nX-Injected: 1', /quotes included/],
    [42, /not 42/],
  ];
  for (const [value, message] of refused) assert.throws(() => checkIfMatch(value), { name: "TypeError", message }, String(value));
});

test("communityUpdateRequest refuses what could not be a conditional edit", () => {
  const ok = { ifMatch: '"v1"' };
  assert.throws(() => communityUpdateRequest("", "c-rust", { name: "x" }), /ifMatch is required/);
  assert.throws(() => communityUpdateRequest("", "c-rust", { name: "x" }, null), /ifMatch is required/);
  assert.throws(() => communityUpdateRequest("", "c-rust", { name: "x" }, {}), /ifMatch is required/);
  for (const fields of [null, undefined, "name=x", ["name"]]) {
    assert.throws(() => communityUpdateRequest("", "c-rust", fields, ok), /fields must be an object/);
  }
  for (const id of ["", "..", "a/b", 7, null]) {
    assert.throws(() => communityUpdateRequest("", id, { name: "x" }, ok), /not a community id/);
  }
});

test("communityResult hands back the community and its version", () => {
  assert.deepEqual(communityResult(answer(200, detail, { ETag: '"v1"' }), { communityId: "c-rust" }), {
    community: detail,
    etag: '"v1"',
  });
  // Cross-origin, a server that does not expose ETag: the community, but no version.
  assert.deepEqual(communityResult(answer(200, community), { communityId: "c-rust" }), { community, etag: null });
  assert.throws(() => communityResult(answer(200, undefined, { ETag: '"v2"' }), { communityId: "c-rust" }), (error) => {
    assert.equal(error.kind, "http");
    assert.match(error.message, /unreadable body: read community c-rust again/);
    return true;
  });
});

test("communityResult makes a 412 a conflict carrying the current version", () => {
  const problem = { type: "urn:community-sync:problem:precondition-failed", title: "Precondition Failed", status: 412, detail: "x" };
  const context = { communityId: "c-rust", ifMatch: '"v1"' };
  assert.throws(
    () => communityResult(answer(412, problem, { ETag: '"v2"', "Retry-After": "5" }), context),
    (error) => {
      assert.ok(error instanceof SyncError);
      assert.equal(error.kind, "conflict");
      assert.equal(error.status, 412);
      assert.equal(error.currentEtag, '"v2"');
      assert.deepEqual(error.problem, problem);
      assert.equal(error.retryAfter, null, "a conflict is decided by the app, never retried as it is");
      assert.equal(error.message, 'community c-rust changed since "v1" (now "v2"): nothing was changed; read it again and decide');
      return true;
    },
  );
  // A 412 whose body or ETag a proxy lost is still a conflict: If-Match is the only precondition sent.
  assert.throws(
    () => communityResult(answer(412, undefined), context),
    (error) => error.kind === "conflict" && error.currentEtag === null && error.problem === null,
  );
});

test("communityResult refuses other answers as the app's other calls do", () => {
  const problem = (status, slug) => ({ type: `urn:community-sync:problem:${slug}`, title: slug, status, detail: slug });
  const cases = [
    [401, "unauthorized", "unauthorized"],
    [403, "http", "forbidden"],
    [404, "not-found", "unknown-community"],
    [409, "http", "slug-taken"],
    [422, "http", "invalid-field"],
    [429, "http", "rate-limited"],
  ];
  for (const [status, kind, slug] of cases) {
    assert.throws(
      () => communityResult(answer(status, problem(status, slug), { "Retry-After": "3" }), { communityId: "c-rust" }),
      (error) => {
        assert.equal(error.kind, kind, slug);
        assert.equal(error.status, status);
        assert.equal(error.problem.type.endsWith(slug), true);
        assert.equal(error.currentEtag, null);
        if (status === 404) assert.equal(error.message, "no community c-rust for this user");
        if (status === 429) assert.equal(error.retryAfter, 3_000);
        return true;
      },
    );
  }
});

test("SyncError carries no current version unless given one", () => {
  assert.equal(new SyncError("http", "x").currentEtag, null);
  assert.equal(new SyncError("conflict", "x", { status: 412, currentEtag: '"v2"' }).currentEtag, '"v2"');
});

// --- through the client --------------------------------------------------------

test("getCommunity reads the version and updateCommunity sends it in If-Match", async (t) => {
  const renamed = { ...community, name: "Rust (archive)" };
  const fetch = withCalls([snapshot([rust])], (request) =>
    request.method === "GET" ? json(detail, { headers: { ETag: '"v1"' } }) : json(renamed, { headers: { ETag: '"v2"' } }),
  );
  const { sync, errors } = start(fetch);
  t.after(() => sync.stop());

  const read = await sync.getCommunity("c-rust");
  assert.deepEqual(read, { community: detail, etag: '"v1"' });
  const saved = await sync.updateCommunity("c-rust", { name: "Rust (archive)" }, { ifMatch: read.etag });
  assert.deepEqual(saved, { community: renamed, etag: '"v2"' });

  const [get, patch] = fetch.calls;
  assert.deepEqual([get.method, get.url.href], ["GET", "http://api.test/communities/c-rust"]);
  assert.equal(get.headers.Authorization, "Bearer stale");
  assert.equal(get.headers["If-Match"], undefined);
  assert.deepEqual([patch.method, patch.url.href], ["PATCH", "http://api.test/communities/c-rust"]);
  assert.equal(patch.headers.Authorization, "Bearer stale");
  assert.equal(patch.headers["If-Match"], '"v1"');
  assert.equal(patch.headers["Content-Type"], "application/json");
  assert.deepEqual(JSON.parse(patch.body), { name: "Rust (archive)" });
  assert.equal(fetch.calls.length, 2);
  assert.deepEqual(errors, []);
});

test("a 412 rejects with a conflict naming the current version, and is not retried", async (t) => {
  const fetch = withCalls([snapshot([rust])], () => conflict('"v3"'));
  const { sync, errors } = start(fetch);
  t.after(() => sync.stop());
  await assert.rejects(sync.updateCommunity("c-rust", { is_public: false }, { ifMatch: '"v1"' }), (error) => {
    assert.ok(error instanceof SyncError);
    assert.equal(error.kind, "conflict");
    assert.equal(error.status, 412);
    assert.equal(error.currentEtag, '"v3"');
    assert.match(error.problem.type, /precondition-failed$/);
    return true;
  });
  assert.equal(fetch.calls.length, 1, "one PATCH: the app decides what to do with a conflict");
  // The app's own call: rejected to the app, not reported to onError, and the loop goes on.
  await fetch.loop.untilRequests(2);
  assert.deepEqual(errors, []);
  assert.equal(sync.status, "live");
});

test("an edit refused for its token is sent again once with a fresh one, version and fields unchanged", async (t) => {
  const unauthorized = () => json({ type: "about:blank", title: "Unauthorized", status: 401, detail: "expired" }, { status: 401 });
  const fetch = withCalls([snapshot([rust])], (request) =>
    request.headers.Authorization === "Bearer stale" ? unauthorized() : json(community, { headers: { ETag: '"v2"' } }),
  );
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  const saved = await sync.updateCommunity("c-rust", { slug: "rust-lang" }, { ifMatch: '"v1"' });
  assert.equal(saved.etag, '"v2"');
  assert.deepEqual(
    fetch.calls.map((call) => [call.method, call.headers.Authorization, call.headers["If-Match"], call.body]),
    [
      ["PATCH", "Bearer stale", '"v1"', '{"slug":"rust-lang"}'],
      ["PATCH", "Bearer fresh", '"v1"', '{"slug":"rust-lang"}'],
    ],
  );
});

test("other refusals reject as the other calls do", async (t) => {
  const problem = (status, slug) =>
    json({ type: `urn:community-sync:problem:${slug}`, title: slug, status, detail: `${slug}!` }, { status });
  const answers = { "c-gone": problem(404, "unknown-community"), "c-taken": problem(409, "slug-taken") };
  const fetch = withCalls([snapshot([rust])], (request) => answers[request.url.pathname.split("/").at(-1)]);
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  await assert.rejects(sync.getCommunity("c-gone"), { name: "SyncError", kind: "not-found", status: 404 });
  await assert.rejects(sync.updateCommunity("c-taken", { slug: "go" }, { ifMatch: "*" }), {
    name: "SyncError",
    kind: "http",
    status: 409,
    message: "HTTP 409: slug-taken!",
    currentEtag: null,
  });
});

test("a malformed edit throws at once and sends nothing", async (t) => {
  const fetch = withCalls([snapshot([rust])], () => json(community));
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  assert.throws(() => sync.updateCommunity("c-rust", { name: "x" }), { name: "TypeError", message: /ifMatch is required/ });
  assert.throws(() => sync.updateCommunity("c-rust", { name: "x" }, { ifMatch: 'W/"v1"' }), /weak ETag/);
  assert.throws(() => sync.updateCommunity("c-rust", null, { ifMatch: "*" }), /fields must be an object/);
  assert.throws(() => sync.getCommunity("../me"), /not a community id/);
  assert.equal(fetch.calls.length, 0);
});

test("a stopped client sends no edit, and stop() ends one in flight", async () => {
  let sent = 0;
  let aborted = null;
  const fetch = async (url, init) => {
    const edit = new URL(url).pathname === "/communities/c-rust";
    if (new URL(url).pathname === "/me/communities") return snapshot([rust]);
    if (edit) sent += 1;
    return new Promise((_, reject) =>
      init.signal.addEventListener("abort", () => {
        if (edit) aborted = init.signal.aborted;
        reject(new DOMException("aborted", "AbortError"));
      }),
    );
  };
  const { sync } = start(fetch);
  const editing = sync.updateCommunity("c-rust", { name: "x" }, { ifMatch: '"v1"' });
  while (sent === 0) await new Promise((resolve) => setTimeout(resolve, 2));
  sync.stop();
  await assert.rejects(editing, { name: "AbortError" });
  assert.equal(aborted, true);
  await assert.rejects(sync.updateCommunity("c-rust", { name: "x" }, { ifMatch: '"v1"' }), {
    name: "SyncError",
    kind: "internal",
    message: "the client is stopped",
  });
  await assert.rejects(sync.getCommunity("c-rust"), { kind: "internal" });
  assert.equal(sent, 1);
});

test("an edit with no answer within requestTimeout rejects as a timeout", async (t) => {
  const fetch = async (url, init) => {
    if (new URL(url).pathname === "/me/communities") return snapshot([rust]);
    return new Promise((_, reject) =>
      init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))),
    );
  };
  const { sync } = start(fetch, { requestTimeout: 20 });
  t.after(() => sync.stop());
  await assert.rejects(sync.updateCommunity("c-rust", { name: "x" }, { ifMatch: '"v1"' }), {
    name: "SyncError",
    kind: "timeout",
  });
});
