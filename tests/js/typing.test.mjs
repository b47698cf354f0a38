// Typing: the pure rules (where one types, the pacing, whose typing a tab sees), then
// typing() against a scripted fetch on a fake clock, and the typing lists of the polls
// delivered to each tab of a user, filtered by its own watches.
import { test } from "node:test";
import assert from "node:assert/strict";

import { decisions } from "./client.mjs";
import { heldPolls, json, scriptedFetch, snapshot, rust, start, until, useInProcessLocks, withCalls } from "./support.mjs";

useInProcessLocks();

const { SyncError, sameTyping, typingDelay, typingError, typingFor, typingPlace, typingRefused, updateForWatches } = decisions;

const ada = { id: "u-ada", name: "Ada" };
const grace = { id: "u-grace", name: "Grace" };
const alan = { id: "u-alan", name: null };

// ---------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------

test("typingPlace takes a community id and one topic, by the server's rules", () => {
  assert.deepEqual(typingPlace("c-1", "thread:t-9"), { communityId: "c-1", topic: "thread:t-9", key: "c-1/thread:t-9" });
  for (const [community, topic] of [
    ["c-1", "*"], // one topic, not all of them
    ["c-1", "Thread"],
    ["c-1", ""],
    ["c-1/x", "thread"], // a slash moves the topic
    ["", "thread"],
    ["c-1", "thread/t-9"],
    [7, "thread"],
    ["c-1", null],
  ]) {
    assert.equal(typingPlace(community, topic), null, `${community} ${topic}`);
  }
});

test("typingDelay lets a PUT go a second after the last one, never sooner", () => {
  assert.equal(typingDelay(-Infinity, 0), 0);
  assert.equal(typingDelay(0, 0), 1000);
  assert.equal(typingDelay(0, 400), 600);
  assert.equal(typingDelay(0, 1000), 0);
  assert.equal(typingDelay(0, 5000), 0);
  assert.equal(typingDelay(100, 600, 2000), 1500);
});

test("typingFor keeps the lists of the watched topics, a wildcard covering its community's", () => {
  const typing = {
    "c-1/thread:t-9": [ada],
    "c-1/board:b-3": [grace, alan],
    "c-2/thread:t-9": [alan],
    "c-1/thread:empty": [],
    "not a key": [ada],
    "c-3/story:s": "not a list",
  };
  assert.deepEqual(typingFor(typing, ["c-1/thread:t-9"]), { "c-1/thread:t-9": [ada] });
  assert.deepEqual(typingFor(typing, ["c-1/*"]), { "c-1/thread:t-9": [ada], "c-1/board:b-3": [grace, alan] });
  assert.deepEqual(typingFor(typing, ["c-2/*", "c-1/board:b-3"]), { "c-1/board:b-3": [grace, alan], "c-2/thread:t-9": [alan] });
  assert.deepEqual(typingFor(typing, []), {});
  assert.deepEqual(typingFor(undefined, ["c-1/*"]), {});
  assert.deepEqual(typingFor(null, ["c-1/*"]), {});
  assert.deepEqual(typingFor([ada], ["c-1/*"]), {});
});

test("sameTyping compares by value: keys, users in order, names", () => {
  assert.equal(sameTyping({}, {}), true);
  assert.equal(sameTyping({ "c-1/t": [ada] }, { "c-1/t": [{ ...ada }] }), true);
  assert.equal(sameTyping({ "c-1/t": [ada] }, {}), false);
  assert.equal(sameTyping({}, { "c-1/t": [ada] }), false);
  assert.equal(sameTyping({ "c-1/t": [ada] }, { "c-1/u": [ada] }), false);
  assert.equal(sameTyping({ "c-1/t": [ada, grace] }, { "c-1/t": [grace, ada] }), false);
  assert.equal(sameTyping({ "c-1/t": [ada] }, { "c-1/t": [{ ...ada, name: "Ada L." }] }), false);
  assert.equal(sameTyping({ "c-1/t": [ada] }, { "c-1/t": [ada, grace] }), false);
});

test("updateForWatches gives each subscription the typing lists of its own watches", () => {
  const update = { status: "changed", changes: [], typing: { "c-1/thread:t-9": [ada], "c-2/board:b": [grace] } };
  assert.deepEqual(updateForWatches(update, []).typing, {});
  assert.deepEqual(updateForWatches(update, ["c-1/*"]).typing, { "c-1/thread:t-9": [ada] });
  assert.equal(updateForWatches(update, ["c-1/*", "c-2/board:b"]), update, "nothing left out: the same object");
});

test("typingRefused tells a refused place from a failure worth repeating; typingError wraps it", () => {
  const failure = (status) => new SyncError(status === 404 ? "not-found" : "http", `HTTP ${status}`, { status });
  assert.deepEqual([404, 422, 403, 400].map((status) => typingRefused(failure(status))), [true, true, true, true]);
  assert.deepEqual([401, 408, 429, 500, 503].map((status) => typingRefused(failure(status))), [false, false, false, false, false]);
  assert.equal(typingRefused(new SyncError("network", "down")), false);
  const problem = { type: "urn:community-sync:problem:unknown-community", status: 404, title: "Not Found", detail: "no c-9" };
  const cause = new SyncError("not-found", "no c-9", { status: 404, problem });
  const error = typingError("PUT", typingPlace("c-9", "thread:t"), cause);
  assert.deepEqual([error.kind, error.status, error.problem, error.cause], ["typing", 404, problem, cause]);
  assert.match(error.message, /c-9\/thread:t/);
});

// ---------------------------------------------------------------------------
// typing() on a fake clock
// ---------------------------------------------------------------------------

/** Let every queued promise run (the fake clock leaves setImmediate alone). */
const flush = async () => {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
};

/**
 * A client whose clock the test moves (`tick(ms)`), the snapshot answered and the poll
 * held; its typing requests are answered by `answer(request)` (204 by default) and
 * recorded with the fake time they were sent at.
 */
async function typist(t, answer = () => new Response(null, { status: 204 })) {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 0 });
  const fetch = withCalls([snapshot([rust])], (request) => {
    request.at = Date.now();
    return answer(request);
  });
  const client = start(fetch);
  t.after(() => client.sync.stop());
  await flush();
  const typing = () => fetch.calls.filter((call) => call.url.pathname === "/me/typing");
  const sent = () => typing().map((call) => [call.method, call.at, call.body === undefined ? null : JSON.parse(call.body)]);
  // What was set off at this time reaches fetch at this time, then the clock moves.
  const tick = async (ms) => {
    await flush();
    t.mock.timers.tick(ms);
    await flush();
  };
  return { ...client, fetch, typing, sent, tick };
}

const clockMockable = (() => {
  const major = Number(process.versions.node.split(".")[0]);
  const minor = Number(process.versions.node.split(".")[1]);
  return major > 20 || (major === 20 && minor >= 11);
})();
const onFakeClock = { skip: !clockMockable && "mocking Date needs Node 20.11 or later" };
const here = { community_id: "c-rust", topic: "thread:t-9" };

test("a burst of keystrokes sends one PUT at once, then at most one a second, and a DELETE 3 s after the last", onFakeClock, async (t) => {
  const { sync, sent, tick, errors } = await typist(t);
  // A keystroke every 100 ms for 2.5 s.
  for (let at = 0; at < 2500; at += 100) {
    assert.equal(sync.typing("c-rust", "thread:t-9"), undefined);
    await tick(100);
  }
  assert.deepEqual(sent(), [
    ["PUT", 0, here],
    ["PUT", 1000, here],
    ["PUT", 2000, here],
  ]);
  await tick(500); // the keystrokes after 2000 fold into one PUT at 3000
  assert.deepEqual(sent().at(-1), ["PUT", 3000, here]);
  await tick(2399); // the last keystroke was at 2400
  assert.deepEqual(sent().slice(3), [["PUT", 3000, here]], "no DELETE before 3 s without a keystroke");
  await tick(1);
  assert.deepEqual(sent().slice(3), [
    ["PUT", 3000, here],
    ["DELETE", 5400, null],
  ]);
  const puts = sent().filter(([method]) => method === "PUT").map(([, at]) => at);
  for (let i = 1; i < puts.length; i++) assert.ok(puts[i] - puts[i - 1] >= 1000, `PUTs at ${puts}`);
  await tick(10_000);
  assert.equal(sent().length, 5, "nothing more once stopped");
  assert.deepEqual(errors, []);
});

test("a keystroke after a pause of a second or more sends at once; one within the second waits for its end", onFakeClock, async (t) => {
  const { sync, sent, tick } = await typist(t);
  sync.typing("c-rust", "thread:t-9");
  await tick(1500);
  sync.typing("c-rust", "thread:t-9"); // 1.5 s after the last PUT: at once
  await tick(0);
  assert.deepEqual(sent().map(([method, at]) => [method, at]), [["PUT", 0], ["PUT", 1500]]);
  await tick(200);
  sync.typing("c-rust", "thread:t-9");
  await tick(700);
  assert.equal(sent().length, 2, "within the second: folded");
  await tick(100);
  assert.deepEqual(sent().at(-1), ["PUT", 2500, here]);
});

test("stopTyping() sends the DELETE at once, and cancels the PUT the second still owed", onFakeClock, async (t) => {
  const { sync, sent, tick } = await typist(t);
  sync.typing("c-rust", "thread:t-9");
  await tick(300);
  sync.typing("c-rust", "thread:t-9"); // owed at 1000
  sync.stopTyping(); // the message was sent
  await tick(0);
  assert.deepEqual(sent(), [
    ["PUT", 0, here],
    ["DELETE", 300, null],
  ]);
  // Typing again at once: the server ignores a second PUT within the second, so it waits.
  sync.typing("c-rust", "thread:t-9");
  await tick(699);
  assert.equal(sent().length, 2);
  await tick(1);
  assert.deepEqual(sent().at(-1), ["PUT", 1000, here]);
  sync.stopTyping();
  await tick(5000);
  assert.deepEqual(sent().slice(2), [
    ["PUT", 1000, here],
    ["DELETE", 1000, null],
  ]);
});

test("no DELETE without a PUT since the last one", onFakeClock, async (t) => {
  const { sync, sent, tick, typing } = await typist(t);
  sync.stopTyping();
  await tick(5000);
  assert.deepEqual(typing(), [], "never typed: nothing to take back");
  sync.typing("c-rust", "thread:t-9");
  sync.stopTyping();
  sync.stopTyping();
  await tick(4000); // the idle timer was cleared too
  sync.stop();
  await tick(0);
  assert.deepEqual(sent().map(([method]) => method), ["PUT", "DELETE"]);
});

test("typing elsewhere moves the typing with the next PUT, within the same pace and without a DELETE", onFakeClock, async (t) => {
  const { sync, sent, tick } = await typist(t);
  sync.typing("c-rust", "thread:t-9");
  await tick(300);
  sync.typing("c-go", "board:b-1");
  await tick(700);
  assert.deepEqual(sent(), [
    ["PUT", 0, here],
    ["PUT", 1000, { community_id: "c-go", topic: "board:b-1" }],
  ]);
});

test("stop() takes the typing back", onFakeClock, async (t) => {
  const { sync, sent, tick } = await typist(t);
  sync.typing("c-rust", "thread:t-9");
  await tick(200);
  sync.typing("c-rust", "thread:t-9");
  sync.stop();
  await tick(5000);
  assert.deepEqual(sent(), [
    ["PUT", 0, here],
    ["DELETE", 200, null],
  ]);
  sync.typing("c-rust", "thread:t-9");
  await tick(2000);
  assert.equal(sent().length, 2, "a stopped client says nothing");
});

test("a refused place is reported once to onError, never thrown, and not asked again while typing there", onFakeClock, async (t) => {
  const problem = { type: "urn:community-sync:problem:unknown-community", title: "Not Found", status: 404, detail: "no c-nope" };
  const { sync, sent, tick, errors } = await typist(t, (request) =>
    JSON.parse(request.body ?? "{}").community_id === "c-nope" ? json(problem, { status: 404 }) : new Response(null, { status: 204 }),
  );
  for (let at = 0; at < 2000; at += 100) {
    assert.doesNotThrow(() => sync.typing("c-nope", "thread:t-1"));
    await tick(100);
  }
  assert.deepEqual(sent().map(([method, at]) => [method, at]), [["PUT", 0]]);
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof SyncError);
  assert.deepEqual([errors[0].kind, errors[0].status, errors[0].problem], ["typing", 404, problem]);
  // Somewhere else it is asked again.
  sync.typing("c-rust", "thread:t-9");
  await tick(0);
  assert.deepEqual(sent().at(-1), ["PUT", 2000, here]);
  // A malformed place is reported, once, and sends nothing.
  sync.typing("c-rust", "Not A Topic");
  sync.typing("c-rust", "Not A Topic");
  await tick(0);
  assert.equal(errors.length, 2);
  assert.match(errors[1].message, /not a place to type in/);
  assert.equal(sent().length, 2);
});

test("a failed PUT is reported and the next second tries again; its DELETE still follows", onFakeClock, async (t) => {
  let down = true;
  const { sync, sent, tick, errors } = await typist(t, () => {
    if (down) throw new TypeError("Failed to fetch");
    return new Response(null, { status: 204 });
  });
  sync.typing("c-rust", "thread:t-9");
  await tick(500);
  down = false;
  sync.typing("c-rust", "thread:t-9");
  await tick(500);
  assert.deepEqual(sent().map(([method, at]) => [method, at]), [["PUT", 0], ["PUT", 1000]]);
  assert.deepEqual(errors.map((error) => [error.kind, error.cause?.kind]), [["typing", "network"]]);
  await tick(2499);
  assert.equal(sent().length, 2);
  await tick(1);
  assert.deepEqual(sent().at(-1), ["DELETE", 3500, null]);
});

test("a follower tab sends its typing itself, not through the leader", { timeout: 10_000 }, async (t) => {
  const tabs = { election: "locks", channelKey: "u-ada" };
  const leaderFetch = heldPolls(() => snapshot([rust]), () => assert.fail("the leader sends no typing"));
  const leader = start(leaderFetch, tabs);
  t.after(() => leader.sync.stop());
  await leaderFetch.untilPolls(1);
  const followerFetch = heldPolls(() => assert.fail("a follower never polls"));
  const follower = start(followerFetch, tabs);
  t.after(() => follower.sync.stop());
  await until(() => follower.updates.length > 0);
  assert.equal(follower.sync.isLeader, false);
  follower.sync.typing("c-rust", "thread:t-9");
  await until(() => followerFetch.calls.length > 0);
  follower.sync.stopTyping();
  await until(() => followerFetch.calls.length > 1);
  assert.deepEqual(
    followerFetch.calls.map((call) => [call.method, call.url.pathname, call.headers.Authorization, call.body]),
    [
      ["PUT", "/me/typing", "Bearer stale", JSON.stringify(here)],
      ["DELETE", "/me/typing", "Bearer stale", undefined],
    ],
  );
});

// ---------------------------------------------------------------------------
// Who else types: the polls' lists, per tab
// ---------------------------------------------------------------------------

const snapshotAt = () => json({ user: { id: "u-ada" }, communities: [rust], hash: "h1", cursor: "c1", server_time: "2026-01-01T00:00:01Z" });
const pollAnswer = (cursor, typing, second) =>
  json({ status: "unchanged", cursor, hash: "h1", server_time: `2026-01-01T00:00:0${second}Z`, changes: [], typing });

test("each tab gets the typing lists of its own watches, relayed by the leader, only when they change", { timeout: 10_000 }, async (t) => {
  const tabs = { election: "locks", channelKey: "u-ada", backoff: { initialDelay: 60_000, maxDelay: 60_000 } };
  const leaderFetch = heldPolls(snapshotAt);
  const leader = start(leaderFetch, tabs);
  t.after(() => leader.sync.stop());
  await leaderFetch.untilPolls(1);
  const follower = start(heldPolls(snapshotAt), tabs);
  t.after(() => follower.sync.stop());
  await until(() => follower.updates.length > 0);

  const leaderSeen = [];
  leader.sync.watch(["c-rust/thread:t-9"], () => {});
  leader.sync.onTyping((typing) => leaderSeen.push(typing));
  const followerSeen = [];
  follower.sync.onTyping((typing) => followerSeen.push(typing), { watch: ["c-go/*"] });
  const unwatched = [];
  follower.sync.onTyping((typing) => unwatched.push(typing)); // the follower's watches: those of the other listener
  await until(() => leaderFetch.polls().some((poll) => poll.url.searchParams.getAll("watch").length === 2));
  let polls = leaderFetch.polls();
  assert.deepEqual(polls.at(-1).url.searchParams.getAll("watch"), ["c-rust/thread:t-9", "c-go/*"]);

  const typing = { "c-rust/thread:t-9": [grace], "c-go/board:b-1": [alan, grace], "c-go/thread:t-2": [ada] };
  polls.at(-1).respond(pollAnswer("c2", typing, 2));
  await until(() => followerSeen.length > 0 && leaderSeen.length > 0);
  assert.deepEqual(leaderSeen, [{ "c-rust/thread:t-9": [grace] }]);
  assert.deepEqual(followerSeen, [{ "c-go/board:b-1": [alan, grace], "c-go/thread:t-2": [ada] }]);
  assert.deepEqual(unwatched, followerSeen);
  assert.deepEqual(follower.updates.at(-1).typing, {}, "a subscription without watches sees no typing");
  assert.equal(leader.updates.at(-1).relayed, false);

  // The same lists again: nothing to tell. Then Grace stops in the thread.
  polls = await leaderFetch.untilPolls(polls.length + 1);
  polls.at(-1).respond(pollAnswer("c3", { ...typing }, 3));
  await until(() => follower.updates.some((update) => update.serverTime === "2026-01-01T00:00:03Z"));
  assert.equal(leaderSeen.length, 1);
  assert.equal(followerSeen.length, 1);
  polls = await leaderFetch.untilPolls(polls.length + 1);
  polls.at(-1).respond(pollAnswer("c4", { "c-go/board:b-1": [alan, grace], "c-go/thread:t-2": [ada] }, 4));
  await until(() => leaderSeen.length > 1);
  assert.deepEqual(leaderSeen.at(-1), {});
  await until(() => follower.updates.some((update) => update.serverTime === "2026-01-01T00:00:04Z"));
  assert.equal(followerSeen.length, 1, "the follower's lists did not change");
  assert.deepEqual(follower.errors, []);
  assert.deepEqual(leader.errors, []);
});

test("a late listener gets the current lists at once, and a tab that stops watching stops seeing them", async (t) => {
  const typing = { "c-rust/thread:t-9": [grace], "c-rust/board:b-1": [ada] };
  const fetch = scriptedFetch([
    json({ user: { id: "u-ada" }, communities: [rust], hash: "h1", cursor: "c1", server_time: "t1" }),
    json({ status: "unchanged", cursor: "c2", hash: "h1", server_time: "t2", changes: [], typing }),
  ]);
  const { sync } = start(fetch, { backoff: { initialDelay: 60_000, maxDelay: 60_000 } });
  t.after(() => sync.stop());
  const unwatch = sync.watch(["c-rust/*"], () => {});
  const requests = await fetch.untilRequests(3);
  assert.deepEqual(requests[1].url.searchParams.getAll("watch"), ["c-rust/*"]);

  const seen = [];
  sync.onTyping((lists) => seen.push(lists));
  const thread = [];
  sync.onTyping((lists) => thread.push(lists), { watch: ["c-rust/thread:t-9"] });
  await until(() => seen.length > 0 && thread.length > 0);
  assert.deepEqual(seen, [typing]);
  assert.deepEqual(thread, [{ "c-rust/thread:t-9": [grace] }]);
  unwatch(); // the thread stays watched by the second listener
  await until(() => seen.length > 1);
  assert.deepEqual(seen.at(-1), { "c-rust/thread:t-9": [grace] });
  assert.equal(thread.length, 1);
});

test("a poll's typing lists replace the held ones whole: none left over from watches dropped and taken up again", async (t) => {
  const held = (request) =>
    new Promise((_, reject) => request.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
  const fetch = scriptedFetch([
    json({ user: { id: "u-ada" }, communities: [rust], hash: "h1", cursor: "c1", server_time: "t1" }),
    json({ status: "unchanged", cursor: "c2", hash: "h1", server_time: "t2", changes: [], typing: { "c-rust/thread:t-9": [grace] } }),
    held, // cut short when the watch goes
    json({ status: "unchanged", cursor: "c3", hash: "h1", server_time: "t3", changes: [] }), // no watches: no typing
    held, // cut short when the watch comes back
  ]);
  const { sync } = start(fetch, { backoff: { initialDelay: 60_000, maxDelay: 60_000 } });
  t.after(() => sync.stop());
  const seen = [];
  sync.onTyping((lists) => seen.push(lists));
  const unwatch = sync.watch(["c-rust/*"], () => {});
  await until(() => seen.length === 1);
  assert.deepEqual(seen, [{ "c-rust/thread:t-9": [grace] }]);
  await fetch.untilRequests(3);
  unwatch();
  await fetch.untilRequests(5);
  assert.deepEqual(fetch.requests[3].url.searchParams.getAll("watch"), []);
  assert.deepEqual(seen.at(-1), {});
  sync.watch(["c-rust/*"], () => {});
  const requests = await fetch.untilRequests(6);
  assert.deepEqual(requests[5].url.searchParams.getAll("watch"), ["c-rust/*"]);
  assert.deepEqual(seen, [{ "c-rust/thread:t-9": [grace] }, {}], "Grace's typing of before is not shown again");
});
