// The fetch loop, driven by a scripted fetch: no browser, no server, election "none".
import { test } from "node:test";
import assert from "node:assert/strict";

import client, { relay } from "./client.mjs";

import { go, json, rust, scriptedFetch, snapshot, start } from "./support.mjs";

const { createCommunitySync, listenForRelay } = client;

test("starts from the snapshot, then long-polls with the returned cursor and hash", async (t) => {
  const fetch = scriptedFetch([
    snapshot([rust]),
    json({ status: "changed", cursor: "c2", hash: "h2", changes: [{ type: "joined", community_id: "c-go" }], communities: [rust, go] }),
    json({ status: "unchanged", cursor: "c3", hash: "h2" }),
  ]);
  const { sync, updates, statuses, tokens } = start(fetch, { pollTimeout: 20 });
  t.after(() => sync.stop());
  const requests = await fetch.untilRequests(4);

  assert.equal(requests[0].url.pathname, "/me/communities");
  assert.equal(requests[0].headers.Authorization, "Bearer stale");
  assert.equal(requests[1].url.pathname, "/community-changes/poll");
  assert.deepEqual(Object.fromEntries(requests[1].url.searchParams), { cursor: "c1", hash: "h1", timeout: "20" });
  assert.deepEqual(Object.fromEntries(requests[2].url.searchParams), { cursor: "c2", hash: "h2", timeout: "20" });
  // unchanged answers carry a new cursor, which must be adopted
  assert.equal(requests[3].url.searchParams.get("cursor"), "c3");

  assert.deepEqual(updates.map((u) => u.status), ["snapshot", "changed", "unchanged"]);
  assert.deepEqual(updates[1].added, [go]);
  assert.deepEqual(updates[1].communities, [rust, go]);
  assert.equal(updates[1].changes[0].type, "joined");
  assert.equal(statuses.at(-1), "live");
  assert.equal(sync.isLeader, true);
  assert.ok(tokens.every((o) => o.forceRefresh === false));
});

test("on 401 it refreshes the token once and retries", async (t) => {
  const fetch = scriptedFetch([
    (request) => (request.headers.Authorization === "Bearer stale" ? json({ status: 401 }, { status: 401 }) : snapshot([rust])),
    (request) => (request.headers.Authorization === "Bearer fresh" ? snapshot([rust]) : json({}, { status: 401 })),
  ]);
  const { sync, updates, tokens, errors } = start(fetch);
  t.after(() => sync.stop());
  await fetch.untilRequests(3);
  assert.deepEqual(tokens.slice(0, 2), [{ forceRefresh: false }, { forceRefresh: true }]);
  assert.equal(fetch.requests[1].headers.Authorization, "Bearer fresh");
  assert.deepEqual(updates.map((u) => u.status), ["snapshot"]);
  assert.deepEqual(errors, []);
});

test("reconnect() after a second 401 asks again at once, from the snapshot", async (t) => {
  const denied = () => json({ title: "Unauthorized", status: 401, detail: "expired" }, { status: 401 });
  const fetch = scriptedFetch([denied(), denied(), snapshot([rust])]);
  const { sync, statuses, errors } = start(fetch, { backoff: { initialDelay: 600_000, maxDelay: 600_000 } });
  t.after(() => sync.stop());
  await fetch.untilRequests(2);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(sync.status, "unauthorized");
  assert.equal(fetch.requests.length, 2);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].kind, "unauthorized");
  assert.equal(errors[0].status, 401);

  sync.reconnect();
  await fetch.untilRequests(4);
  assert.equal(fetch.requests[2].url.pathname, "/me/communities");
  assert.ok(statuses.includes("unauthorized"));
});

test("held long polls that keep failing switch it to timeout=0 smart polls", async (t) => {
  const dropped = () => new TypeError("connection reset by proxy");
  const fetch = scriptedFetch([
    snapshot([rust]),
    dropped(),
    dropped(),
    dropped(),
    json({ status: "changed", cursor: "c2", hash: "h2", changes: [], communities: [rust, go] }, { headers: { "X-Poll-Interval": "0.01" } }),
    json({ status: "unchanged", cursor: "c3", hash: "h2" }),
  ]);
  const { sync, statuses, updates } = start(fetch, {
    transport: { fallbackAfter: 3, heldFailureAfter: 0, retryLongPollAfter: 60_000 },
  });
  t.after(() => sync.stop());
  const requests = await fetch.untilRequests(7);
  assert.deepEqual(
    requests.slice(1).map((r) => r.url.searchParams.get("timeout")),
    ["25", "25", "25", "0", "0", "0"],
  );
  assert.equal(requests[5].url.searchParams.get("cursor"), "c2");
  assert.ok(statuses.includes("reconnecting"));
  assert.equal(statuses.at(-1), "smart");
  assert.deepEqual(updates.at(-1).source, "smart-poll");
});

test("quick failures (server down) do not give up on long polling", async (t) => {
  const refused = () => new TypeError("connection refused");
  const fetch = scriptedFetch([snapshot([rust]), refused(), refused(), refused(), refused()]);
  const { sync } = start(fetch); // default heldFailureAfter: 1 s
  t.after(() => sync.stop());
  const requests = await fetch.untilRequests(6);
  assert.ok(requests.slice(1).every((r) => r.url.searchParams.get("timeout") === "25"));
});

test("429 and 503 wait for Retry-After before asking again", async (t) => {
  const fetch = scriptedFetch([
    snapshot([rust]),
    json({ status: 503 }, { status: 503, headers: { "Retry-After": "1" } }),
    json({ status: "unchanged", cursor: "c2", hash: "h1" }),
  ]);
  const { sync, errors } = start(fetch, { backoff: { initialDelay: 1, maxDelay: 1 } });
  t.after(() => sync.stop());
  await fetch.untilRequests(2);
  const failedAt = Date.now();
  await fetch.untilRequests(3);
  const waited = Date.now() - failedAt;
  assert.ok(waited >= 900, `retried after ${waited} ms despite Retry-After: 1`);
  assert.equal(errors[0].status, 503);
  assert.equal(errors[0].retryAfter, 1000);
});

test("a rejected cursor is replaced by revalidating the list with If-None-Match", async (t) => {
  const fetch = scriptedFetch([
    snapshot([rust]),
    json({ title: "Bad Request", status: 400, detail: "cursor" }, { status: 400 }),
    new Response(null, { status: 304, headers: { ETag: '"h1"' } }),
    json({ status: "reset", cursor: "c9", hash: "h1", communities: [rust] }),
  ]);
  const { sync, updates } = start(fetch);
  t.after(() => sync.stop());
  const requests = await fetch.untilRequests(5);
  assert.equal(requests[2].url.pathname, "/me/communities");
  assert.equal(requests[2].headers["If-None-Match"], '"h1"');
  assert.equal(requests[3].url.pathname, "/community-changes/poll");
  assert.equal(requests[3].url.searchParams.get("cursor"), null);
  assert.equal(requests[4].url.searchParams.get("cursor"), "c9");
  assert.deepEqual(updates.at(-1).added, []);
  assert.deepEqual(updates.at(-1).removed, []);
});

test("stop() aborts the held request and ends in status stopped", async () => {
  const fetch = scriptedFetch([snapshot([rust])]);
  const { sync, statuses } = start(fetch);
  const [, held] = await fetch.untilRequests(2);
  assert.equal(held.signal.aborted, false);
  sync.stop();
  assert.equal(held.signal.aborted, true);
  assert.equal(sync.status, "stopped");
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(fetch.requests.length, 2);
  assert.equal(statuses.at(-1), "stopped");
});

test("an aborted signal option stops it too", async () => {
  const controller = new AbortController();
  const fetch = scriptedFetch([snapshot([rust])]);
  const { sync } = start(fetch, { signal: controller.signal });
  const [, held] = await fetch.untilRequests(2);
  controller.abort();
  assert.equal(held.signal.aborted, true);
  assert.equal(sync.status, "stopped");
});

test("relayTo refuses '*' and posts each update to the explicit origin", async (t) => {
  assert.throws(
    () => createCommunitySync({ getToken: async () => "t", relayTo: { target: { postMessage() {} }, targetOrigin: "*" } }),
    /explicit origin/,
  );
  const posted = [];
  const target = { postMessage: (message, origin) => posted.push({ message, origin }) };
  const fetch = scriptedFetch([snapshot([rust])]);
  const { sync } = start(fetch, { relayTo: { target, targetOrigin: "https://parent.example" } });
  t.after(() => sync.stop());
  await fetch.untilRequests(2);
  const update = posted.find((p) => p.message.type === "community-sync:update");
  assert.equal(update.origin, "https://parent.example");
  assert.deepEqual(update.message.update.communities, [rust]);
  assert.ok(posted.every((p) => p.origin === "https://parent.example"));
});

test("listenForRelay accepts allowed origins only", () => {
  const target = new EventTarget();
  const received = [];
  const anySource = true;
  assert.throws(() => listenForRelay({ allowedOrigins: ["*"], onUpdate() {}, target, anySource }), /explicit/);
  const stop = listenForRelay({ allowedOrigins: ["https://frame.example"], onUpdate: (u) => received.push(u), target, anySource });
  const send = (origin, data) => target.dispatchEvent(new MessageEvent("message", { origin, data }));
  send("https://evil.example", { type: "community-sync:update", update: { evil: true } });
  send("https://frame.example", { type: "something-else", update: { other: true } });
  send("https://frame.example", { type: "community-sync:update", update: { ok: true } });
  stop();
  send("https://frame.example", { type: "community-sync:update", update: { late: true } });
  assert.deepEqual(received, [{ ok: true }]);
});

test("listenForRelay needs the source window unless told any will do", () => {
  const target = new EventTarget();
  const frame = new EventTarget(); // stands for the iframe's window
  const other = new EventTarget(); // another window of the same origin
  const received = [];
  assert.throws(() => listenForRelay({ allowedOrigins: ["https://frame.example"], onUpdate() {}, target }), /source/);
  const stop = listenForRelay({
    allowedOrigins: ["https://frame.example"],
    source: { contentWindow: frame }, // an iframe element: its window is read per message
    onUpdate: (u) => received.push(u),
    target,
  });
  const send = (source, update) =>
    // Node's MessageEvent only takes a MessagePort as source; a browser's carries a window.
    target.dispatchEvent(
      Object.assign(new Event("message"), { origin: "https://frame.example", source, data: { type: "community-sync:update", update } }),
    );
  send(other, { forged: true });
  send(null, { forged: true });
  send(frame, { ok: true });
  stop();
  assert.deepEqual(received, [{ ok: true }]);
});

test("the relay module is also reachable from the main module", () => {
  assert.equal(listenForRelay, relay.listenForRelay);
});
