// getSnapshot(): one object for what a page renders, whose identity changes only when
// something in it changed, so that a framework's store re-renders only then.
import { test } from "node:test";
import assert from "node:assert/strict";

import client, { decisions } from "./client.mjs";
import { go, json, later, rust, scriptedFetch, snapshot, start, until } from "./support.mjs";

const { onlineLabel, unreadLabel } = client;

test("getSnapshot is one stable object, replaced only when something changed", async (t) => {
  const unchanged = later();
  const changed = later();
  const fetch = scriptedFetch([
    json({ ...JSON.parse(await snapshot([{ ...rust, unread: 2 }]).text()), notifications_unread: 1, online: { "c-rust": 3 } }),
    unchanged.answer,
    changed.answer,
  ]);
  const { sync, updates } = start(fetch);
  t.after(() => sync.stop());
  const first = sync.getSnapshot();
  assert.equal(first, decisions.EMPTY_SNAPSHOT);
  assert.deepEqual(first, { communities: [], unread: {}, notifications: null, online: null, status: "connecting" });
  await until(() => updates.length === 1);
  const loaded = sync.getSnapshot();
  assert.deepEqual(loaded.communities.map((c) => c.id), ["c-rust"]);
  assert.deepEqual(loaded.unread, { "c-rust": 2 });
  assert.equal(loaded.notifications, 1);
  assert.deepEqual(loaded.online, { "c-rust": 3 });
  assert.equal(sync.getSnapshot(), loaded, "asked twice, the same object");
  assert.equal(sync.status, "live");
  // An answer that changes nothing a page shows leaves the snapshot as it was.
  unchanged.release(json({ status: "unchanged", cursor: "c2", hash: "h1" }));
  await until(() => updates.length === 2);
  assert.equal(sync.getSnapshot(), loaded);
  changed.release(json({ status: "changed", cursor: "c3", hash: "h2", communities: [{ ...rust, unread: 2 }, go] }));
  await until(() => updates.length === 3);
  const joined = sync.getSnapshot();
  assert.notEqual(joined, loaded);
  assert.deepEqual(joined.communities.map((c) => c.id), ["c-rust", "c-go"]);
  assert.equal(joined.unread, loaded.unread, "the unread counts kept their identity");
  assert.equal(Object.isFrozen(joined), true);
});

test("the label helpers are exported by the public module", () => {
  assert.equal(unreadLabel(3), decisions.unreadLabel(3));
  assert.equal(onlineLabel(3), "3 online");
});
