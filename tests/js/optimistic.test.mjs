// Optimistic joins and leaves: the pure rules (the entry a join shows, the list with
// the pending ops on top, when the server's answers settle them), then two tabs of one
// user against scripted servers: shown at once in both, confirmed by a poll, rolled
// back in both when the server refuses.
import { test } from "node:test";
import assert from "node:assert/strict";

import { decisions } from "./client.mjs";
import { heldPolls, json, later, start, until, useInProcessLocks } from "./support.mjs";

useInProcessLocks();

const { SyncError, joinEntry, membershipError, membershipUrl, overlayMemberships, settleMemberships } = decisions;

const rust = { id: "c-rust", slug: "rust", name: "Rust", logo_url: null, is_public: true, role: "member", joined_at: "t0", unread: 2 };
const go = { id: "c-go", slug: "go", name: "Go", logo_url: null, is_public: true, role: "member", joined_at: "t5", unread: 0 };
const ids = (communities) => communities.map((community) => community.id);

// ---------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------

test("joinEntry is shaped like the server's entries, with what is known and a pending mark", () => {
  assert.deepEqual(joinEntry("c-go", { name: "Go", slug: "go", logo_url: "https://x/go.png", is_public: true, member_count: 9 }), {
    id: "c-go",
    slug: "go",
    name: "Go",
    logo_url: "https://x/go.png",
    is_public: true,
    role: "member",
    joined_at: null,
    unread: 0,
    pending: true,
  });
  const bare = joinEntry("c-go");
  assert.deepEqual([bare.name, bare.slug, bare.logo_url, bare.is_public, bare.pending], ["c-go", "c-go", null, true, true]);
  assert.equal(joinEntry("c-go", { name: 7 }).name, "c-go");
  assert.equal(joinEntry("c-go", null).name, "c-go");
  assert.equal(membershipUrl("http://api.test/", "c go"), "http://api.test/communities/c%20go/members/me");
});

test("overlayMemberships adds pending joins once, takes pending leaves out, and changes nothing twice", () => {
  const entry = joinEntry("c-go", { name: "Go" });
  const join = { communityId: "c-go", kind: "join", entry };
  const leave = { communityId: "c-rust", kind: "leave" };
  const list = [rust];
  assert.deepEqual(overlayMemberships(list, [join]), [rust, entry]);
  assert.deepEqual(overlayMemberships(list, [join, leave]), [entry]);
  assert.equal(overlayMemberships(list, []), list, "nothing pending: the same list");
  // Applied to a list that already shows them: nothing changes, nothing is doubled.
  const shown = overlayMemberships(list, [join]);
  assert.equal(overlayMemberships(shown, [join]), shown);
  // The server lists the community already: its entry wins over the pending one.
  assert.deepEqual(overlayMemberships([rust, go], [join]), [rust, go]);
  assert.deepEqual(overlayMemberships([go], [leave]), [go]);
});

test("settleMemberships: shown by the list, answered by a later request, or given up in flight", () => {
  const op = (kind, after, since = 0) => ({ key: `${kind}-${after}`, communityId: "c-go", kind, after, since });
  const settle = (pending, options) => {
    const { left, settled } = settleMemberships(new Map([["c-go", pending]]), { requestNo: 5, now: 1000, maxAge: 30_000, ...options });
    return [left.size, settled];
  };
  // A join: settled once a list shows it, whatever the request.
  assert.deepEqual(settle(op("join", Infinity), { communities: [rust, go] }), [0, ["join-Infinity"]]);
  assert.deepEqual(settle(op("join", Infinity), { communities: [rust] }), [1, []], "a list from before the join");
  assert.deepEqual(settle(op("join", Infinity), { communities: null }), [1, []], "an answer without a list");
  // A leave: settled once a list no longer shows it.
  assert.deepEqual(settle(op("leave", Infinity), { communities: [rust] }), [0, ["leave-Infinity"]]);
  assert.deepEqual(settle(op("leave", Infinity), { communities: [rust, go] }), [1, []]);
  // Answered by the server before request 5 was sent: its list is the truth, whatever it says.
  assert.deepEqual(settle(op("join", 4), { communities: [rust] }), [0, ["join-4"]]);
  assert.deepEqual(settle(op("join", 5), { communities: [rust] }), [1, []], "request 5 may have left before the answer");
  // In flight for longer than maxAge: the tab that asked may be gone.
  assert.deepEqual(settle(op("join", Infinity, 0), { communities: [rust], now: 30_001 }), [0, ["join-Infinity"]]);
  assert.deepEqual(settle(op("join", 7, 0), { communities: [rust], now: 99_999 }), [1, []], "answered: waits for a later request");
});

test("membershipError carries the server's refusal under the kind join or leave", () => {
  const problem = { type: "urn:community-sync:problem:forbidden", title: "Forbidden", status: 403, detail: "private" };
  const cause = new SyncError("http", "HTTP 403: private", { status: 403, problem, retryAfter: null });
  const error = membershipError("join", "c-ops", cause);
  assert.ok(error instanceof SyncError);
  assert.deepEqual([error.kind, error.status, error.problem, error.cause], ["join", 403, problem, cause]);
  assert.match(error.message, /could not join community c-ops: HTTP 403: private/);
  assert.equal(membershipError("leave", "c-1", new SyncError("network", "down")).kind, "leave");
});

// ---------------------------------------------------------------------------
// Two tabs
// ---------------------------------------------------------------------------

const tabs = { election: "locks", channelKey: "u-ada", backoff: { initialDelay: 60_000, maxDelay: 60_000 } };
const snapshot = () => json({ user: { id: "u-ada" }, communities: [rust], hash: "h1", cursor: "c1", server_time: "2026-01-01T00:00:01Z" });
let second = 1;
const changed = (cursor, communities) => {
  const serverTime = `2026-01-01T00:00:${String(++second).padStart(2, "0")}Z`;
  return json({ status: "changed", cursor, hash: `h-${cursor}`, server_time: serverTime, changes: [], communities });
};
const membership = { user_id: "u-ada", community_id: "c-go", role: "member", joined_at: "2026-01-01T00:00:03Z" };

/** A leader and a follower; each tab's own calls (join, leave) are answered by its `calls`. */
async function twoTabs(t, { leaderCalls = () => assert.fail("the leader asks"), followerCalls = () => assert.fail("the follower asks") } = {}) {
  const leaderFetch = heldPolls(snapshot, leaderCalls);
  const leader = { ...start(leaderFetch, tabs), fetch: leaderFetch };
  t.after(() => leader.sync.stop());
  await leaderFetch.untilPolls(1);
  const followerFetch = heldPolls(() => assert.fail("a follower never polls"), followerCalls);
  const follower = { ...start(followerFetch, tabs), fetch: followerFetch };
  t.after(() => follower.sync.stop());
  await until(() => follower.updates.length > 0);
  assert.deepEqual([leader.sync.isLeader, follower.sync.isLeader], [true, false]);
  return { leader, follower };
}

/** Answer the leader's poll in flight, and wait until the follower shows that answer. */
async function answerPoll({ leader, follower }, response) {
  const polls = leader.fetch.polls();
  const poll = polls.at(-1);
  const heard = follower.updates.length;
  poll.respond(response);
  await leader.fetch.untilPolls(polls.length + 1);
  await until(() => follower.updates.slice(heard).some((update) => update.relayed && update.status === "changed"));
}

const inTabs = { timeout: 10_000 };

test("a join shows at once in every tab, survives a poll answered before it, and is confirmed by a later one", inTabs, async (t) => {
  const put = later();
  const both = await twoTabs(t, { followerCalls: put.answer });
  const { leader, follower } = both;

  const joining = follower.sync.join("c-go", { name: "Go", slug: "go" });
  const shown = follower.sync.communities.find((community) => community.id === "c-go");
  assert.deepEqual(shown, { ...joinEntry("c-go", { name: "Go", slug: "go" }) });
  assert.equal(follower.updates.at(-1).status, "membership");
  assert.deepEqual(follower.updates.at(-1).added, [shown]);
  // The other tab shows it before the server answers.
  await until(() => ids(leader.sync.communities).includes("c-go"));
  assert.equal(leader.updates.at(-1).source, "local");
  assert.deepEqual(leader.updates.at(-1).added.map((community) => community.pending), [true]);
  assert.deepEqual(follower.fetch.calls.map((call) => [call.method, call.url.pathname, call.body]), [
    ["PUT", "/communities/c-go/members/me", undefined],
  ]);

  // A poll answered before the server saw the join: the entry is neither lost nor doubled.
  await answerPoll(both, changed("c2", [{ ...rust, unread: 3 }]));
  for (const tab of [leader, follower]) {
    assert.deepEqual(ids(tab.sync.communities), ["c-rust", "c-go"]);
    assert.equal(tab.updates.at(-1).communities.at(-1).pending, true);
    assert.deepEqual(tab.updates.at(-1).removed, []);
  }

  put.release(json(membership, { status: 201 }));
  assert.deepEqual(await joining, membership);
  await until(() => leader.sync.communities.at(-1).joined_at === membership.joined_at);
  assert.equal(leader.sync.communities.at(-1).pending, true, "answered, not yet listed by a poll");

  // The poll lists it: the server's entry replaces the pending one, in every tab.
  await answerPoll(both, changed("c3", [{ ...rust, unread: 3 }, go]));
  for (const tab of [leader, follower]) {
    assert.deepEqual(tab.sync.communities, [{ ...rust, unread: 3 }, go]);
    const update = tab.updates.at(-1);
    assert.deepEqual([update.added, update.removed, update.updated], [[], [], [go]]);
  }
  // Settled: a later list without it is the truth (someone removed the user meanwhile).
  await answerPoll(both, changed("c4", [rust]));
  for (const tab of [leader, follower]) assert.deepEqual(ids(tab.sync.communities), ["c-rust"]);
  assert.deepEqual([leader.errors, follower.errors], [[], []]);
});

test("a refused join is rolled back in every tab, with a join error in each", inTabs, async (t) => {
  const put = later();
  const { leader, follower } = await twoTabs(t, { followerCalls: put.answer });
  const joining = follower.sync.join("c-ops");
  await until(() => ids(leader.sync.communities).includes("c-ops"));
  assert.deepEqual(ids(follower.sync.communities), ["c-rust", "c-ops"]);

  const detail = "There is no community 'c-ops'.";
  const problem = { type: "urn:community-sync:problem:unknown-community", title: "Not Found", status: 404, detail };
  put.release(json(problem, { status: 404 }));
  await assert.rejects(joining, (error) => {
    assert.ok(error instanceof SyncError);
    assert.deepEqual([error.kind, error.status, error.problem], ["join", 404, problem]);
    return true;
  });
  assert.deepEqual(ids(follower.sync.communities), ["c-rust"], "rolled back here at once");
  await until(() => !ids(leader.sync.communities).includes("c-ops"));
  for (const tab of [leader, follower]) {
    assert.deepEqual(tab.updates.at(-1).removed.map((community) => community.id), ["c-ops"]);
    assert.deepEqual(tab.errors.map((error) => [error.kind, error.status, error.problem?.type]), [["join", 404, problem.type]]);
  }
});

test("a leave hides the community at once in every tab until a poll confirms it", inTabs, async (t) => {
  const gone = later();
  const both = await twoTabs(t, { leaderCalls: gone.answer });
  const { leader, follower } = both;

  const leaving = leader.sync.leave("c-rust");
  assert.deepEqual(leader.sync.communities, []);
  assert.deepEqual(leader.updates.at(-1).removed, [rust]);
  await until(() => follower.sync.communities.length === 0);
  assert.deepEqual(follower.updates.at(-1).removed, [rust]);

  // Answered before the server saw the leave: still hidden.
  await answerPoll(both, changed("c2", [rust, go]));
  for (const tab of [leader, follower]) assert.deepEqual(ids(tab.sync.communities), ["c-go"]);

  gone.release(new Response(null, { status: 204 }));
  assert.equal(await leaving, undefined);
  assert.deepEqual(leader.fetch.calls.map((call) => [call.method, call.url.pathname]), [["DELETE", "/communities/c-rust/members/me"]]);
  await answerPoll(both, changed("c3", [go]));
  // Settled: the user joining again elsewhere shows as a poll says.
  await answerPoll(both, changed("c4", [go, rust]));
  for (const tab of [leader, follower]) assert.deepEqual(ids(tab.sync.communities), ["c-go", "c-rust"]);
  assert.deepEqual([leader.errors, follower.errors], [[], []]);
});

test("a refused leave brings the community back in every tab, with a leave error in each", inTabs, async (t) => {
  const gone = later();
  const { leader, follower } = await twoTabs(t, { followerCalls: gone.answer });
  const leaving = follower.sync.leave("c-rust");
  assert.deepEqual(follower.sync.communities, []);
  await until(() => leader.sync.communities.length === 0);

  const problem = { type: "urn:community-sync:problem:last-owner", title: "Conflict", status: 409, detail: "the last owner" };
  gone.release(json(problem, { status: 403 }));
  await assert.rejects(leaving, { name: "SyncError", kind: "leave", status: 403 });
  await until(() => leader.sync.communities.length === 1);
  for (const tab of [leader, follower]) {
    assert.deepEqual(tab.sync.communities, [rust]);
    assert.deepEqual(tab.updates.at(-1).added, [rust]);
    assert.deepEqual(tab.errors.map((error) => [error.kind, error.status, error.problem?.detail]), [["leave", 403, "the last owner"]]);
  }
});

test("a tab opened while a join is pending shows it too", inTabs, async (t) => {
  const put = later();
  const { leader } = await twoTabs(t, { leaderCalls: put.answer });
  const joining = leader.sync.join("c-go", { name: "Go" });
  const late = start(heldPolls(() => assert.fail("a follower never polls")), tabs);
  t.after(() => late.sync.stop());
  await until(() => late.updates.length > 0);
  assert.deepEqual(ids(late.sync.communities), ["c-rust", "c-go"]);
  assert.equal(late.updates[0].communities.at(-1).pending, true);
  put.release(json(membership, { status: 201 }));
  await joining;
});

test("join and leave check the id, and reject once the client is stopped", async () => {
  const { sync } = start(heldPolls(snapshot), { election: "none" });
  assert.throws(() => sync.join("c/1"), TypeError);
  assert.throws(() => sync.leave(42), TypeError);
  sync.stop();
  await assert.rejects(sync.join("c-go"), { name: "SyncError", kind: "internal" });
});
