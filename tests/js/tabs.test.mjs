// Two tabs of one user in one process: a BroadcastChannel between them and, where Node
// has no Web Locks, a small in-process stand-in (support.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";

import { json, later, start, until, useInProcessLocks, withCalls } from "./support.mjs";

useInProcessLocks();

const rust = { id: "c-rust", name: "Rust", role: "member", unread: 3, last_activity_at: "t0" };
const snapshot = json({ user: { id: "u-ada" }, communities: [rust], notifications_unread: 0, hash: "h1", cursor: "c1", server_time: "t1" });
const unreadOf = (sync) => sync.communities.find((c) => c.id === "c-rust")?.unread;

test("markRead in a follower tab sends the PUT itself and every tab shows the read at once", { timeout: 10_000 }, async (t) => {
  const held = later();
  const leaderFetch = withCalls([snapshot, held.answer], () => assert.fail("the leader sends no PUT"));
  const tabs = { election: "locks", channelKey: "u-ada" };
  const leader = start(leaderFetch, tabs);
  t.after(() => leader.sync.stop());
  await leaderFetch.loop.untilRequests(2);
  assert.equal(leader.sync.isLeader, true);

  const followerFetch = withCalls([], () => json({ ...rust, unread: 0 }));
  const follower = start(followerFetch, tabs);
  t.after(() => follower.sync.stop());
  await until(() => follower.updates.length > 0);
  assert.equal(follower.sync.isLeader, false);
  assert.equal(unreadOf(follower.sync), 3);

  const reading = follower.sync.markRead("c-rust");
  assert.equal(unreadOf(follower.sync), 0);
  await until(() => unreadOf(leader.sync) === 0);
  await reading;
  assert.deepEqual(followerFetch.calls.map((c) => [c.method, c.url.pathname]), [["PUT", "/me/communities/c-rust/read"]]);
  assert.equal(followerFetch.loop.requests.length, 0, "a follower never polls");

  // The leader's poll was sent before the read: its old count must not come back anywhere.
  held.release(json({ status: "changed", cursor: "c2", hash: "h2", server_time: "t2", changes: [], communities: [rust] }));
  await until(() => follower.updates.some((u) => u.serverTime === "t2"));
  assert.equal(unreadOf(leader.sync), 0);
  assert.equal(unreadOf(follower.sync), 0);
});
