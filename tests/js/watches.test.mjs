// Topics below a community: the pure rules of watches (validation, the union one poll
// carries, who receives a topic's activity), then the fetch loop that polls them, alone
// and as the leader of several tabs.
import { test } from "node:test";
import assert from "node:assert/strict";

import { decisions } from "./client.mjs";
import { heldPolls, json, scriptedFetch, start, until, useInProcessLocks, withCalls } from "./support.mjs";

useInProcessLocks();

const {
  LONG_POLL,
  MAX_WATCHES,
  SNAPSHOT,
  buildPollUrl,
  checkWatches,
  interpretResponse,
  isTopicChange,
  parseWatch,
  refusedWatches,
  sameWatches,
  uncoveredWatches,
  updateForWatches,
  watchUnion,
  watchedCommunities,
  watchesOn,
} = decisions;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const many = (n, community = "c-1") => Array.from({ length: n }, (_, i) => `${community}/thread:t-${i}`);

// ---------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------

test("parseWatch reads a community and a topic, or a wildcard, by the server's rules", () => {
  assert.deepEqual(parseWatch("c-1/thread:t-9"), { community: "c-1", topic: "thread:t-9" });
  assert.deepEqual(parseWatch("c-1/*"), { community: "c-1", topic: "*" });
  assert.deepEqual(parseWatch("Org.eu:7/story:s-4.v2_x"), { community: "Org.eu:7", topic: "story:s-4.v2_x" });
  assert.deepEqual(parseWatch(`c/${"a".repeat(64)}`).topic.length, 64);
  for (const bad of [
    "thread:t-9", // no community
    "/thread:t-9",
    "c-1/",
    "c-1/Thread", // upper case
    "c-1/9lives", // not a letter first
    "c-1/thread/t-9", // a slash in the topic
    "c-1/thread t-9",
    `c/${"a".repeat(65)}`,
    `${"c".repeat(65)}/t`,
    "../t",
    "c-1/**",
    "",
    null,
    42,
  ]) {
    assert.equal(parseWatch(bad), null, String(bad));
  }
});

test("checkWatches keeps the order, drops repeats, and throws naming what is wrong", () => {
  assert.deepEqual(checkWatches(["c-1/a", "c-2/*", "c-1/a"]), ["c-1/a", "c-2/*"]);
  assert.deepEqual(checkWatches(new Set(["c-1/a"])), ["c-1/a"]);
  assert.deepEqual(checkWatches([]), []);
  assert.throws(() => checkWatches(["c-1/a", "c-1/Bad"]), { name: "TypeError", message: /not a watch: "c-1\/Bad"/ });
  assert.throws(() => checkWatches([7]), { name: "TypeError", message: /not a watch: 7/ });
  assert.throws(() => checkWatches("c-1/a"), { name: "TypeError", message: /a list/ });
  assert.throws(() => checkWatches(null), TypeError);
  assert.equal(checkWatches(many(MAX_WATCHES)).length, 20);
  assert.throws(() => checkWatches(many(21)), { name: "TypeError", message: /21 watches: a poll carries at most 20/ });
  // Repeats do not count against the limit.
  assert.equal(checkWatches([...many(20), ...many(20)]).length, 20);
});

test("watchUnion puts the first lists first, lets a wildcard stand for its community, and keeps at most 20", () => {
  assert.deepEqual(watchUnion([["c-1/a", "c-2/b"], ["c-2/b", "c-3/c"]]), ["c-1/a", "c-2/b", "c-3/c"]);
  // A wildcard covers the topics of its community, at the place of its first watch.
  assert.deepEqual(watchUnion([["c-1/a", "c-2/b"], ["c-1/*", "c-1/z"]]), ["c-1/*", "c-2/b"]);
  assert.deepEqual(watchUnion([["c-1/*"], ["c-1/a", "c-1/*"]]), ["c-1/*"]);
  // Over the limit the first ones win...
  const union = watchUnion([many(15, "c-1"), many(10, "c-2")]);
  assert.equal(union.length, 20);
  assert.deepEqual(union, [...many(15, "c-1"), ...many(5, "c-2")]);
  // ...and a wildcard takes the place of every watch it covers, making room for more.
  assert.deepEqual(watchUnion([many(15, "c-1"), many(10, "c-2"), ["c-1/*"]]), ["c-1/*", ...many(10, "c-2")]);
  // A wildcard of a community watched nowhere else waits for room like any other.
  assert.deepEqual(watchUnion([many(20, "c-1"), ["c-9/*"]]), many(20, "c-1"));
  assert.deepEqual(watchUnion([["c-1/a", "not a watch"]]), ["c-1/a"]);
  assert.deepEqual(watchUnion([["c-1/a", "c-1/b"]], 1), ["c-1/a"]);
});

test("uncoveredWatches, sameWatches, watchedCommunities and watchesOn", () => {
  assert.deepEqual(uncoveredWatches(["c-1/a", "c-1/*", "c-2/b", "c-3/c"], ["c-2/*", "c-1/a"]), ["c-1/*", "c-3/c"]);
  assert.deepEqual(uncoveredWatches(["c-1/a"], ["c-1/*"]), []);
  assert.equal(sameWatches(["a/b", "c/d"], ["c/d", "a/b"]), true);
  assert.equal(sameWatches(["a/b"], ["a/b", "c/d"]), false);
  assert.equal(sameWatches(undefined, []), true);
  assert.deepEqual(watchedCommunities(["c-1/a", "c-2/*", "c-1/b"]), ["c-1", "c-2"]);
  assert.deepEqual(watchesOn(["c-1/a", "c-2/*", "c-1/b"], ["c-1"]), ["c-1/a", "c-1/b"]);
});

test("refusedWatches sets aside the watches of the communities the server does not show, else all sent", () => {
  const sent = ["c-1/a", "c-secret/*", "c-2/c"];
  // Declared by the tabs: a wildcard stood for c-secret/b in the poll.
  const declared = ["c-1/a", "c-secret/b", "c-secret/*", "c-2/c", "c-3/over-the-limit"];
  assert.deepEqual(refusedWatches(sent, new Set(["c-secret"]), declared), ["c-secret/b", "c-secret/*"]);
  assert.deepEqual(refusedWatches(sent, new Set(), declared), declared.slice(0, 4));
  assert.deepEqual(refusedWatches(sent, new Set(["c-elsewhere"])), sent);
});

test("updateForWatches keeps every change of no topic and the topic changes its watches cover", () => {
  const joined = { type: "joined", community_id: "c-1" };
  const post = { type: "activity", community_id: "c-1", kind: "post_created", ref: "p-1" };
  const thread = { type: "activity", community_id: "c-1", topic: "thread:t-9", kind: "comment_created", ref: "m-1" };
  const board = { type: "activity", community_id: "c-1", topic: "board:b-3", kind: "post_created", ref: "p-2" };
  const elsewhere = { type: "activity", community_id: "c-2", topic: "thread:t-9", kind: "vote", ref: "p-3", data: { votes: 4 } };
  const update = { status: "changed", changes: [joined, post, thread, board, elsewhere] };
  assert.deepEqual(updateForWatches(update, []).changes, [joined, post]);
  assert.deepEqual(updateForWatches(update, ["c-1/thread:t-9"]).changes, [joined, post, thread]);
  assert.deepEqual(updateForWatches(update, ["c-1/*", "c-2/thread:t-9"]).changes, update.changes);
  assert.equal(updateForWatches(update, ["c-1/*", "c-2/*"]), update, "nothing left out: the same object");
  assert.equal(updateForWatches(update, ["c-1/*"]).status, "changed");
  assert.deepEqual([joined, post, thread].map(isTopicChange), [false, false, true]);
});

test("buildPollUrl repeats watch once per watch", () => {
  const url = buildPollUrl("http://api.test", { cursor: "c1", timeout: 25, watches: ["c-1/thread:t-9", "c-2/*"] });
  const params = new URL(url).searchParams;
  assert.deepEqual(params.getAll("watch"), ["c-1/thread:t-9", "c-2/*"]);
  assert.equal(buildPollUrl("", { timeout: 0, watches: [] }), "/community-changes/poll?timeout=0");
});

test("interpretResponse tells a poll refused for its watches from one refused for its cursor", () => {
  const response = (status, body) => ({ status, statusText: "", headers: new Headers(), body });
  const watches = ["c-1/thread:t-9"];
  const unknown = { type: "urn:community-sync:problem:unknown-community", title: "Not Found", status: 404, detail: "no c-1" };
  const refused = interpretResponse(response(404, unknown), LONG_POLL, 0, watches);
  assert.equal(refused.kind, "refused-watch");
  assert.deepEqual([refused.error.kind, refused.error.status, refused.error.problem], ["watch", 404, unknown]);
  assert.equal(interpretResponse(response(404, unknown), LONG_POLL, 0, []).kind, "refused");
  assert.equal(interpretResponse(response(404, unknown), SNAPSHOT, 0, watches).kind, "refused");
  const malformed = { type: "urn:community-sync:problem:invalid-watch", status: 400, detail: "bad watch" };
  assert.equal(interpretResponse(response(400, malformed), LONG_POLL, 0, watches).kind, "refused-watch");
  assert.equal(interpretResponse(response(400, { ...malformed, type: "invalid-watch" }), LONG_POLL, 0, watches).kind, "refused-watch");
  const cursor = { type: "urn:community-sync:problem:invalid-cursor", status: 400, detail: "cursor" };
  assert.equal(interpretResponse(response(400, cursor), LONG_POLL, 0, watches).kind, "rejected");
});

// ---------------------------------------------------------------------------
// One tab
// ---------------------------------------------------------------------------

const rust = { id: "c-rust", slug: "rust", name: "Rust", role: "member" };
const secret = { id: "c-secret", slug: "secret", name: "Secret", role: "member" };
const snapshot = (communities = [rust]) =>
  json({ user: { id: "u-ada" }, communities, hash: "h1", cursor: "c1", server_time: "t1" });
const changed = (changes, { cursor = "c2", hash = "h1", communities = [rust] } = {}) =>
  json({ status: "changed", cursor, hash, server_time: cursor, changes, communities });
const activity = (topic, ref, extra = {}) => ({
  type: "activity", community_id: "c-rust", ...(topic ? { topic } : {}), kind: "comment_created", ref, by: "u-7", at: "t2", ...extra,
});
const watchesOf = (request) => request.url.searchParams.getAll("watch");
// No request may wait for a backoff: a test that needed one would time out.
const NO_BACKOFF = { backoff: { initialDelay: 60_000, maxDelay: 60_000 } };

test("watch() adds its topics to the poll; each subscription receives its own topics' activity only", async (t) => {
  const thread = activity("thread:t-9", "m-1", { data: { title: "Lifetimes", votes: 3 } });
  const board = activity("board:b-3", "p-2");
  const post = activity(null, "p-1");
  const joined = { type: "joined", community_id: "c-go", at: "t2", by: null };
  const fetch = scriptedFetch([snapshot(), changed([thread, post, board, joined])]);
  const { sync, updates } = start(fetch);
  t.after(() => sync.stop());
  const watched = [];
  sync.watch(["c-rust/thread:t-9"], (change, update) => watched.push([change, update.status]));
  const everything = [];
  sync.subscribe((update) => everything.push(...update.changes), { watch: ["c-rust/*"] });
  const activities = [];
  sync.onChange((change) => activities.push(change), { types: ["activity"] });
  const requests = await fetch.untilRequests(3);

  assert.deepEqual(watchesOf(requests[1]), ["c-rust/*"], "the wildcard covers the thread");
  assert.equal(requests[1].url.searchParams.get("cursor"), "c1");
  assert.deepEqual(watched, [[thread, "changed"]]);
  assert.deepEqual(watched[0][0].data, { title: "Lifetimes", votes: 3 });
  assert.deepEqual(everything, [thread, post, board, joined]);
  // Without watches: the community-level changes, as before topics existed.
  assert.deepEqual(updates[1].changes, [post, joined]);
  assert.deepEqual(activities, [post]);
});

test("a watch added or dropped while a poll is held re-polls at once with the same cursor", async (t) => {
  const fetch = scriptedFetch([snapshot()]);
  const { sync, errors } = start(fetch, NO_BACKOFF);
  t.after(() => sync.stop());
  const [, first] = await fetch.untilRequests(2);
  assert.deepEqual(watchesOf(first), []);

  const unwatch = sync.watch(["c-rust/thread:t-9"], () => {});
  const [, , second] = await fetch.untilRequests(3);
  assert.equal(first.signal.aborted, true);
  const asked = Object.fromEntries(second.url.searchParams);
  assert.deepEqual(asked, { cursor: "c1", hash: "h1", timeout: "25", watch: "c-rust/thread:t-9" });

  // Declared in one go: one new poll, and a wildcard covers the board.
  sync.watch(["c-go/board:b-1"], () => {});
  sync.subscribe(() => {}, { watch: ["c-go/*"] });
  const [, , , third] = await fetch.untilRequests(4);
  assert.deepEqual(watchesOf(third), ["c-rust/thread:t-9", "c-go/*"]);
  assert.equal(third.url.searchParams.get("cursor"), "c1");

  // Already covered: nothing to ask anew.
  const covered = sync.watch(["c-go/thread:x"], () => {});
  covered();
  await sleep(30);
  assert.equal(fetch.requests.length, 4);
  assert.equal(third.signal.aborted, false);

  unwatch();
  const [, , , , fourth] = await fetch.untilRequests(5);
  assert.deepEqual(watchesOf(fourth), ["c-go/*"]);
  assert.equal(fourth.url.searchParams.get("cursor"), "c1");
  assert.deepEqual(errors, []);
  assert.equal(sync.status, "live");
});

test("watches are checked where they are declared", async (t) => {
  const fetch = scriptedFetch([snapshot()]);
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  assert.throws(() => sync.watch(["c-rust/thread:t-9", "thread:t-1"], () => {}), {
    name: "TypeError",
    message: /not a watch: "thread:t-1"/,
  });
  assert.throws(() => sync.watch(many(21), () => {}), { name: "TypeError", message: /at most 20/ });
  assert.throws(() => sync.watch(["c-rust/*"]), { name: "TypeError", message: /callback/ });
  assert.throws(() => sync.subscribe(() => {}, { watch: "c-rust/*" }), { name: "TypeError", message: /a list/ });
  assert.throws(() => sync.onChange(() => {}, { watch: ["c-rust/Bad"] }), { name: "TypeError", message: /c-rust\/Bad/ });
  const requests = await fetch.untilRequests(2);
  assert.deepEqual(watchesOf(requests[1]), [], "nothing of a refused declaration is polled");
});

test("more than 20 watches in a tab: the first 20 are polled and the rest reported once", async (t) => {
  const fetch = scriptedFetch([snapshot()]);
  const { sync, errors } = start(fetch, NO_BACKOFF);
  t.after(() => sync.stop());
  const first = sync.watch(many(15, "c-1"), () => {});
  sync.watch(many(10, "c-2"), () => {});
  const requests = await fetch.untilRequests(2);
  assert.deepEqual(watchesOf(requests[1]), [...many(15, "c-1"), ...many(5, "c-2")]);
  await until(() => errors.length > 0);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].kind, "watch");
  assert.deepEqual(errors[0].watches, many(10, "c-2").slice(5));
  assert.match(errors[0].message, /more than 20/);

  sync.watch(["c-1/*"], () => {}); // takes the place of fifteen: room for the rest
  const [, , all] = await fetch.untilRequests(3);
  assert.deepEqual(watchesOf(all), ["c-1/*", ...many(10, "c-2")]);
  first(); // covered by the wildcard all the same: nothing to ask anew
  await sleep(30);
  assert.equal(fetch.requests.length, 3);
  assert.equal(errors.length, 1, "reported once");
});

test("a poll refused for a watch sets that watch aside, keeps the cursor, and retries it once the user joins", async (t) => {
  const problem = { type: "urn:community-sync:problem:unknown-community", title: "Not Found", status: 404 };
  const unknown = json({ ...problem, detail: "There is no community 'c-secret'." }, { status: 404 });
  const thread = activity("thread:t-9", "m-1");
  const hidden = { ...activity("thread:x", "m-2"), community_id: "c-secret" };
  const fetch = withCalls(
    [
      snapshot(),
      unknown,
      changed([thread, { type: "joined", community_id: "c-secret", at: "t3", by: "u-admin" }], {
        cursor: "c2",
        hash: "h2",
        communities: [rust, secret],
      }),
      changed([hidden], { cursor: "c3", hash: "h2", communities: [rust, secret] }),
    ],
    (request) => (request.url.pathname === "/communities/c-rust" ? json(rust) : json({ ...problem, detail: "no" }, { status: 404 })),
  );
  const { sync, errors } = start(fetch, NO_BACKOFF);
  t.after(() => sync.stop());
  const seen = [];
  sync.watch(["c-rust/thread:t-9", "c-secret/thread:x"], (change) => seen.push(change.ref));
  const requests = await fetch.loop.untilRequests(5);

  assert.deepEqual(watchesOf(requests[1]), ["c-rust/thread:t-9", "c-secret/thread:x"]);
  assert.deepEqual(fetch.calls.map((c) => [c.method, c.url.pathname]).sort(), [
    ["GET", "/communities/c-rust"],
    ["GET", "/communities/c-secret"],
  ]);
  // Asked again at once, from the same cursor, without the refused watch.
  const asked = Object.fromEntries(requests[2].url.searchParams);
  assert.deepEqual(asked, { cursor: "c1", hash: "h1", timeout: "25", watch: "c-rust/thread:t-9" });
  const [refusal] = errors;
  assert.deepEqual([errors.length, refusal.kind, refusal.watches], [1, "watch", ["c-secret/thread:x"]]);
  assert.match(refusal.message, /no community c-secret that this user may follow/);
  // The user joined c-secret: its watch is polled again.
  assert.deepEqual(watchesOf(requests[3]), ["c-rust/thread:t-9", "c-secret/thread:x"]);
  assert.equal(requests[3].url.searchParams.get("cursor"), "c2");
  assert.deepEqual(seen, ["m-1", "m-2"]);
  assert.equal(sync.status, "live");
});

test("a poll refused as invalid-watch keeps its cursor and polls on without the watches it carried", async (t) => {
  const problem = { type: "urn:community-sync:problem:invalid-watch", title: "Bad Request", status: 400, detail: "bad" };
  const invalid = json(problem, { status: 400 });
  const fetch = withCalls([snapshot(), invalid], () => assert.fail("nothing to ask about"));
  const { sync, errors } = start(fetch, NO_BACKOFF);
  t.after(() => sync.stop());
  sync.watch(["c-rust/thread:t-9"], () => {});
  const requests = await fetch.loop.untilRequests(3);
  assert.deepEqual(Object.fromEntries(requests[2].url.searchParams), { cursor: "c1", hash: "h1", timeout: "25" });
  assert.deepEqual(errors.map((e) => [e.kind, e.watches]), [["watch", ["c-rust/thread:t-9"]]]);
  assert.match(errors[0].message, /the server refuses c-rust\/thread:t-9: bad/);
});

// ---------------------------------------------------------------------------
// Several tabs
// ---------------------------------------------------------------------------

const tabs = { election: "locks", channelKey: "u-ada", ...NO_BACKOFF };

/** Tabs that open one after the other: the first leads, the others follow in that order. */
async function openTabs(t, count) {
  const opened = [];
  for (let i = 0; i < count; i++) {
    const fetch = heldPolls(() => snapshot());
    const tab = { ...start(fetch, tabs), fetch };
    t.after(() => tab.sync.stop());
    if (i === 0) await fetch.untilPolls(1);
    else await until(() => tab.updates.length > 0);
    opened.push(tab);
  }
  return opened;
}

test("the leader polls every tab's watches; each tab receives its own topics' activity only", async (t) => {
  const [leader, follower] = await openTabs(t, 2);
  assert.deepEqual([leader.sync.isLeader, follower.sync.isLeader], [true, false]);

  const followerSeen = [];
  follower.sync.watch(["c-rust/thread:t-9"], (change) => followerSeen.push(change.ref));
  let polls = await leader.fetch.untilPolls(2);
  assert.equal(polls[0].signal.aborted, true);
  assert.deepEqual(watchesOf(polls[1]), ["c-rust/thread:t-9"]);
  const leaderSeen = [];
  leader.sync.watch(["c-rust/board:b-3"], (change) => leaderSeen.push(change.ref));
  polls = await leader.fetch.untilPolls(3);
  assert.equal(polls[1].signal.aborted, true);
  assert.deepEqual(watchesOf(polls[2]), ["c-rust/board:b-3", "c-rust/thread:t-9"]);
  assert.ok(polls.every((poll) => poll.url.searchParams.get("cursor") === "c1"), "the same cursor each time");

  const thread = activity("thread:t-9", "m-1");
  const board = activity("board:b-3", "p-2");
  const post = activity(null, "p-1");
  polls[2].respond(changed([thread, post, board]));
  await until(() => follower.updates.some((update) => update.serverTime === "c2"));
  assert.deepEqual(leaderSeen, ["p-2"]);
  assert.deepEqual(followerSeen, ["m-1"]);
  assert.deepEqual(leader.updates.at(-1).changes, [post], "a subscriber without watches");
  assert.deepEqual(follower.updates.at(-1).changes, [post]);
  assert.equal(follower.fetch.requests.length, 0, "a follower never asks");

  // The follower goes: its watches leave the poll at once.
  polls = await leader.fetch.untilPolls(4);
  assert.equal(polls[3].url.searchParams.get("cursor"), "c2");
  follower.sync.stop();
  polls = await leader.fetch.untilPolls(5);
  assert.equal(polls[3].signal.aborted, true);
  assert.deepEqual(watchesOf(polls[4]), ["c-rust/board:b-3"]);
  assert.equal(polls[4].url.searchParams.get("cursor"), "c2");
});

test("a tab that takes over polls the other tabs' watches from its first request", async (t) => {
  const [first, second, third] = await openTabs(t, 3);
  third.sync.watch(["c-rust/thread:t-9"], () => {});
  const [, watched] = await first.fetch.untilPolls(2);
  assert.deepEqual(watchesOf(watched), ["c-rust/thread:t-9"]);

  first.sync.stop();
  await until(() => second.sync.isLeader);
  const [catchUp] = await second.fetch.untilPolls(1);
  const asked = Object.fromEntries(catchUp.url.searchParams);
  assert.deepEqual(asked, { cursor: "c1", hash: "h1", timeout: "0", watch: "c-rust/thread:t-9" });
  assert.equal(third.sync.isLeader, false);
});

test("a follower whose watches do not fit in the leader's poll is told which", async (t) => {
  const [leader, follower] = await openTabs(t, 2);
  leader.sync.watch(many(15, "c-1"), () => {});
  follower.sync.watch(many(10, "c-2"), () => {});
  await until(() => follower.errors.length > 0);
  const [error] = follower.errors;
  assert.equal(error.kind, "watch");
  assert.deepEqual(error.watches, many(10, "c-2").slice(5));
  const polls = leader.fetch.polls();
  assert.deepEqual(watchesOf(polls.at(-1)), [...many(15, "c-1"), ...many(5, "c-2")]);
  assert.deepEqual(leader.errors, []);
});
