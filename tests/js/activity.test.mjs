// Unread counts, notifications and read markers through the fetch loop, against a
// scripted fetch: the poll requests follow the script, the app's own calls (read
// markers, notification pages) are answered by `calls`.
import { test } from "node:test";
import assert from "node:assert/strict";

import { json, later, scriptedFetch, start, withCalls } from "./support.mjs";

const rust = { id: "c-rust", slug: "rust", name: "Rust", role: "member", unread: 3, last_activity_at: "2026-11-22T10:00:00Z" };
const go = { id: "c-go", slug: "go", name: "Go", role: "member", unread: 0, last_activity_at: null };

const snapshot = (communities, notificationsUnread = 0) =>
  json({ user: { id: "u-ada" }, communities, notifications_unread: notificationsUnread, hash: "h1", cursor: "c1", server_time: "t1" });
const changed = (communities, { cursor, hash, changes = [], ...rest }) =>
  json({ status: "changed", cursor, hash, server_time: cursor, changes, communities, ...rest });

test("unread counts, notifications and activity reach subscribers, truncated included", async (t) => {
  const activity = { type: "activity", community_id: "c-go", kind: "post_created", ref: "p-1", by: "u-7", at: "t2" };
  const notification = { type: "notification", kind: "mention", ref: "m-1", by: "u-7", at: "t2" };
  const fetch = scriptedFetch([
    snapshot([rust, go], 4),
    changed([rust, { ...go, unread: 1, last_activity_at: "t2" }], {
      cursor: "c2",
      hash: "h2",
      changes: [activity, notification, { type: "joined", community_id: "c-go", at: "t2" }],
      notifications_unread: 5,
      truncated: true,
    }),
  ]);
  const { sync, updates } = start(fetch);
  t.after(() => sync.stop());
  const seen = [];
  sync.onChange((change) => seen.push(change.type), { types: ["activity", "notification"] });
  await fetch.untilRequests(3);

  assert.equal(updates[0].communities[0].unread, 3);
  assert.equal(updates[0].notificationsUnread, 4);
  assert.equal(updates[0].truncated, false);
  const [, answer] = updates;
  assert.deepEqual(answer.changes.slice(0, 2), [activity, notification]);
  assert.deepEqual(answer.updated.map((c) => [c.id, c.unread, c.last_activity_at]), [["c-go", 1, "t2"]]);
  assert.equal(answer.notificationsUnread, 5);
  assert.equal(answer.truncated, true);
  assert.equal(sync.notificationsUnread, 5);
  assert.deepEqual(seen, ["activity", "notification"]);
});

test("change types it does not know are passed on and change nothing else", async (t) => {
  const fetch = scriptedFetch([
    snapshot([rust]),
    changed([rust], { cursor: "c2", hash: "h2", changes: [{ type: "frobnicated", wat: 1 }, { type: "read", community_id: "c-rust" }] }),
  ]);
  const { sync, updates, errors } = start(fetch);
  t.after(() => sync.stop());
  const requests = await fetch.untilRequests(3);
  assert.equal(requests[2].url.searchParams.get("cursor"), "c2");
  assert.deepEqual(updates[1].changes.map((c) => c.type), ["frobnicated", "read"]);
  assert.deepEqual(updates[1].communities, [rust]);
  assert.deepEqual(errors, []);
  assert.equal(sync.status, "live");
});

test("markRead shows unread 0 at once, sends the PUT, and an answer already on its way does not undo it", async (t) => {
  const held = later();
  const fetch = withCalls(
    [
      snapshot([rust, go]),
      held.answer,
      changed([{ ...rust, unread: 2 }, go], { cursor: "c3", hash: "h3", changes: [] }),
    ],
    () => json({ ...rust, unread: 0, last_activity_at: "t9" }),
  );
  const { sync, updates } = start(fetch);
  t.after(() => sync.stop());
  await fetch.loop.untilRequests(2);

  const reading = sync.markRead("c-rust");
  assert.equal(sync.communities.find((c) => c.id === "c-rust").unread, 0, "not optimistic");
  assert.equal(updates.at(-1).status, "read");
  assert.deepEqual(updates.at(-1).updated.map((c) => c.id), ["c-rust"]);
  const entry = await reading;
  assert.equal(entry.unread, 0);
  const [put] = fetch.calls;
  assert.equal(put.method, "PUT");
  assert.equal(put.url.pathname, "/me/communities/c-rust/read");
  assert.equal(put.headers.Authorization, "Bearer stale");
  assert.equal(sync.communities.find((c) => c.id === "c-rust").last_activity_at, "t9");

  // Sent before the read was confirmed: its count of 3 is from before the read.
  held.release(changed([rust, { ...go, unread: 1 }], { cursor: "c2", hash: "h2", changes: [] }));
  await fetch.loop.untilRequests(4);
  const afterStale = updates.find((u) => u.serverTime === "c2");
  assert.deepEqual(afterStale.communities.map((c) => c.unread), [0, 1]);
  // Asked after the read: the server's count is the truth again (new activity since).
  const confirmed = updates.find((u) => u.serverTime === "c3");
  assert.deepEqual(confirmed.communities.map((c) => c.unread), [2, 0]);
  assert.equal(sync.communities[0].unread, 2);
});

test("a read change from the server settles a pending read at once", async (t) => {
  const held = later();
  const fetch = withCalls([snapshot([rust]), held.answer], () => json({ ...rust, unread: 0 }));
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  await fetch.loop.untilRequests(2);
  await sync.markRead("c-rust");
  // The held poll woke on the read and then on new activity: its count counts.
  const read = { type: "read", community_id: "c-rust", at: "t2" };
  held.release(changed([{ ...rust, unread: 1 }], { cursor: "c2", hash: "h2", changes: [read] }));
  await fetch.loop.untilRequests(3);
  assert.equal(sync.communities[0].unread, 1);
});

test("markRead of a community the user is not in rejects with not-found and restores the count", async (t) => {
  const fetch = withCalls(
    [snapshot([rust]), undefined, changed([rust], { cursor: "c2", hash: "h2" })],
    () => json({ type: "about:blank", title: "Not Found", status: 404, detail: "no such membership" }, { status: 404 }),
  );
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  const [, held] = await fetch.loop.untilRequests(2);
  await assert.rejects(sync.markRead("c-rust"), (error) => {
    assert.equal(error.name, "SyncError");
    assert.equal(error.kind, "not-found");
    assert.equal(error.status, 404);
    assert.match(error.message, /not a member of community c-rust/);
    return true;
  });
  // It asks the server again at once instead of showing 0 until the next answer.
  assert.equal(held.signal.aborted, true);
  await fetch.loop.untilRequests(4);
  assert.equal(sync.communities[0].unread, 3);
});

test("markNotificationsRead sends its PUT and zeroes the count at once", async (t) => {
  const fetch = withCalls([snapshot([rust], 7)], () => json({ notifications_unread: 0 }));
  const { sync, updates } = start(fetch);
  t.after(() => sync.stop());
  await fetch.loop.untilRequests(2);
  const reading = sync.markNotificationsRead();
  assert.equal(sync.notificationsUnread, 0);
  assert.equal(updates.at(-1).notificationsUnread, 0);
  await reading;
  assert.deepEqual(fetch.calls.map((c) => [c.method, c.url.pathname]), [["PUT", "/me/notifications/read"]]);
});

test("notifications() pages newest first with the cursor the server returns", async (t) => {
  const page1 = [{ kind: "mention", ref: "n-3" }, { kind: "mention", ref: "n-2" }];
  const page2 = [{ kind: "mention", ref: "n-1" }];
  const fetch = withCalls([snapshot([rust])], (request) =>
    request.url.searchParams.get("cursor") === "k2"
      ? json({ notifications: page2, next_cursor: null })
      : json({ notifications: page1, next_cursor: "k2" }),
  );
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  const first = await sync.notifications({ limit: 2 });
  assert.deepEqual(first.notifications, page1);
  assert.equal(first.nextCursor, "k2");
  const second = await sync.notifications({ cursor: first.nextCursor, limit: 2 });
  assert.deepEqual(second.notifications, page2);
  assert.equal(second.nextCursor, null);
  assert.deepEqual(
    fetch.calls.map((c) => [c.method, c.url.pathname, Object.fromEntries(c.url.searchParams)]),
    [
      ["GET", "/me/notifications", { limit: "2" }],
      ["GET", "/me/notifications", { cursor: "k2", limit: "2" }],
    ],
  );
});

test("a server without notifications makes notifications() reject clearly", async (t) => {
  const fetch = withCalls([snapshot([rust])], () => json({ title: "Not Found", status: 404 }, { status: 404 }));
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  await assert.rejects(sync.notifications(), { name: "SyncError", kind: "not-found", message: /lists no notifications/ });
});

test("online counts reach subscribers; presence() asks conditionally; visibility is a PUT", async (t) => {
  const users = [{ id: "u-ada", name: "Ada", since: "2026-11-22T10:00:00Z" }];
  const fetch = withCalls(
    [json({ user: { id: "u-ada" }, communities: [rust], hash: "h1", cursor: "c1", server_time: "t1", online: { "c-rust": 2 } })],
    (request) => {
      if (request.url.pathname === "/me/presence") return json(JSON.parse(request.body));
      if (request.headers["If-None-Match"] === '"p1"') return new Response(null, { status: 304, headers: { ETag: '"p1"' } });
      return json({ online: 2, users, truncated: false }, { headers: { ETag: '"p1"' } });
    },
  );
  const { sync, updates } = start(fetch);
  t.after(() => sync.stop());
  await fetch.loop.untilRequests(2);
  assert.deepEqual(updates[0].online, { "c-rust": 2 });
  assert.deepEqual(sync.online, { "c-rust": 2 });
  const first = await sync.presence("c-rust");
  assert.deepEqual(first, { online: 2, users, truncated: false });
  assert.deepEqual(await sync.presence("c-rust"), first);
  assert.deepEqual(fetch.calls.map((c) => c.headers["If-None-Match"] ?? null), [null, '"p1"']);
  assert.equal(await sync.setPresenceVisible(false), false);
  const put = fetch.calls.at(-1);
  assert.deepEqual([put.method, put.url.pathname, JSON.parse(put.body)], ["PUT", "/me/presence", { visible: false }]);
  assert.equal(put.headers["Content-Type"], "application/json");
});

test("readers() asks for a topic's readers, conditionally and apart from the community's presence", async (t) => {
  const readers = [{ id: "u-grace", name: "Grace", since: "2026-11-22T10:00:00Z" }];
  const fetch = withCalls(
    [json({ user: { id: "u-ada" }, communities: [rust], hash: "h1", cursor: "c1", server_time: "t1" })],
    (request) => {
      const tag = request.url.search ? '"r1"' : '"p1"';
      if (request.headers["If-None-Match"] === tag) return new Response(null, { status: 304, headers: { ETag: tag } });
      return json({ online: 1, users: request.url.search ? readers : [], truncated: false }, { headers: { ETag: tag } });
    },
  );
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  await fetch.loop.untilRequests(2);
  const first = await sync.readers("c-rust", "thread:t-1");
  assert.deepEqual(first.users, readers);
  assert.deepEqual((await sync.presence("c-rust")).users, []);
  assert.deepEqual(await sync.readers("c-rust", "thread:t-1"), first);
  assert.deepEqual(fetch.calls.map((c) => [c.url.pathname + c.url.search, c.headers["If-None-Match"] ?? null]), [
    ["/communities/c-rust/presence?topic=thread%3At-1", null],
    ["/communities/c-rust/presence", null],
    ["/communities/c-rust/presence?topic=thread%3At-1", '"r1"'],
  ]);
  await assert.rejects(() => sync.readers("c-rust", ""), TypeError);
});
