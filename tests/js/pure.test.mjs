import { test } from "node:test";
import assert from "node:assert/strict";

import { decisions, relay } from "./client.mjs";

const {
  LONG_POLL,
  SMART_POLL,
  SNAPSHOT,
  applyAnswer,
  backoffDelay,
  buildPollUrl,
  chooseTransport,
  diffCommunities,
  initialTransport,
  parsePollInterval,
  parseRetryAfter,
  recordTransportOutcome,
  tokenSubject,
} = decisions;
const { isAllowedRelayMessage } = relay;

const rust = { id: "c-rust", name: "Rust", role: "member" };
const python = { id: "c-python", name: "Python", role: "moderator" };
const go = { id: "c-go", name: "Go", role: "member" };

test("backoffDelay grows exponentially under equal jitter and stops at the cap", () => {
  const options = { initialDelay: 100, maxDelay: 1000, multiplier: 2 };
  const top = () => 0.999999;
  assert.equal(backoffDelay(0, options, top), 99);
  assert.equal(backoffDelay(1, options, top), 199);
  assert.equal(backoffDelay(3, options, top), 799);
  assert.equal(backoffDelay(4, options, top), 999);
  assert.equal(backoffDelay(50, options, top), 999);
  // Never below half the ceiling, whatever the draw: no run of short waits.
  assert.equal(backoffDelay(3, options, () => 0), 400);
  assert.equal(backoffDelay(3, options, () => 0.5), 600);
  assert.equal(backoffDelay(50, options, () => 0), 500);
});

test("backoffDelay stays within [ceiling / 2, ceiling) with the real random source", () => {
  for (let attempt = 0; attempt < 20; attempt++) {
    const ceiling = Math.min(500, 10 * 2 ** attempt);
    const delay = backoffDelay(attempt, { initialDelay: 10, maxDelay: 500 });
    assert.ok(delay >= ceiling / 2 - 1 && delay < ceiling, `attempt ${attempt}: ${delay}`);
  }
});

test("backoffDelay falls back to the defaults for missing options", () => {
  assert.equal(backoffDelay(0, {}, () => 0.5), 375);
  assert.equal(backoffDelay(100, {}, () => 0.5), 22500);
});

test("parseRetryAfter reads delay-seconds and HTTP dates", () => {
  const now = Date.parse("Sun, 22 Nov 2026 10:00:00 GMT");
  assert.equal(parseRetryAfter("0", now), 0);
  assert.equal(parseRetryAfter("120", now), 120_000);
  assert.equal(parseRetryAfter(" 7 ", now), 7_000);
  assert.equal(parseRetryAfter("Sun, 22 Nov 2026 10:00:30 GMT", now), 30_000);
  assert.equal(parseRetryAfter("Sun, 22 Nov 2026 09:00:00 GMT", now), 0);
});

test("parseRetryAfter rejects what it cannot read", () => {
  for (const value of [null, undefined, "", "soon", "-5", "1.5", "2026-11-22"]) {
    assert.equal(parseRetryAfter(value, 0), null, String(value));
  }
});

test("parsePollInterval turns seconds into milliseconds", () => {
  assert.equal(parsePollInterval("15"), 15_000);
  assert.equal(parsePollInterval("2.5"), 2_500);
  assert.equal(parsePollInterval(null), null);
  assert.equal(parsePollInterval("fast"), null);
  assert.equal(parsePollInterval("-1"), null);
});

test("diffCommunities matches by id and reports added, removed and updated", () => {
  const promoted = { ...rust, role: "admin" };
  const diff = diffCommunities([rust, python], [promoted, go]);
  assert.deepEqual(diff.added, [go]);
  assert.deepEqual(diff.removed, [python]);
  assert.deepEqual(diff.updated, [promoted]);
});

test("diffCommunities of equal lists is empty, whatever the order", () => {
  assert.deepEqual(diffCommunities([rust, python], [{ ...python }, { ...rust }]), {
    added: [],
    removed: [],
    updated: [],
  });
  assert.deepEqual(diffCommunities(undefined, [rust]).added, [rust]);
});

test("a long-poll transport survives quick failures and falls back after three held ones", () => {
  const options = { fallbackAfter: 3, heldFailureAfter: 1000, retryLongPollAfter: 60_000 };
  let state = initialTransport();
  const fail = (heldFor, now = 0) => (state = recordTransportOutcome(state, { transport: LONG_POLL, ok: false, heldFor }, now, options));

  fail(5); // connection refused: the server is down, not a proxy problem
  assert.equal(state.failures, 0);
  fail(20_000);
  fail(20_000);
  assert.equal(chooseTransport(state, 0, options), LONG_POLL);
  fail(20_000, 1_000);
  assert.equal(state.mode, SMART_POLL);
  assert.equal(chooseTransport(state, 1_000 + 59_999, options), SMART_POLL);
  assert.equal(chooseTransport(state, 1_000 + 60_000, options), LONG_POLL);
});

test("a success resets the failure count", () => {
  const options = { fallbackAfter: 3, heldFailureAfter: 0 };
  let state = initialTransport();
  state = recordTransportOutcome(state, { transport: LONG_POLL, ok: false, heldFor: 10 }, 0, options);
  state = recordTransportOutcome(state, { transport: LONG_POLL, ok: false, heldFor: 10 }, 0, options);
  state = recordTransportOutcome(state, { transport: LONG_POLL, ok: true }, 0, options);
  state = recordTransportOutcome(state, { transport: LONG_POLL, ok: false, heldFor: 10 }, 0, options);
  assert.equal(state.mode, LONG_POLL);
  assert.equal(state.failures, 1);
});

test("a failed long-poll probe keeps smart polling for another full period", () => {
  const options = { heldFailureAfter: 1000, retryLongPollAfter: 60_000 };
  let state = { mode: SMART_POLL, failures: 0, smartSince: 0 };
  assert.equal(chooseTransport(state, 60_000, options), LONG_POLL);
  state = recordTransportOutcome(state, { transport: LONG_POLL, ok: false, heldFor: 30_000 }, 90_000, options);
  assert.equal(state.mode, SMART_POLL);
  assert.equal(chooseTransport(state, 100_000, options), SMART_POLL);
  assert.equal(chooseTransport(state, 150_000, options), LONG_POLL);
  state = recordTransportOutcome(state, { transport: LONG_POLL, ok: true }, 150_000, options);
  assert.deepEqual(state, initialTransport());
});

test("smart polls and snapshots do not move the transport", () => {
  const state = { mode: SMART_POLL, failures: 0, smartSince: 5 };
  assert.equal(recordTransportOutcome(state, { transport: SMART_POLL, ok: false, heldFor: 9e9 }, 10, {}), state);
  assert.equal(recordTransportOutcome(state, { transport: SNAPSHOT, ok: true }, 10, {}), state);
});

test("buildPollUrl encodes cursor, hash and timeout", () => {
  assert.equal(
    buildPollUrl("http://api.test/", { cursor: "a+b/c=", hash: "9f86", timeout: 25 }),
    "http://api.test/community-changes/poll?cursor=a%2Bb%2Fc%3D&hash=9f86&timeout=25",
  );
  assert.equal(buildPollUrl("", { timeout: 0 }), "/community-changes/poll?timeout=0");
});

test("applyAnswer on a changed answer adopts list, cursor and hash and diffs", () => {
  const state = { communities: [rust, python], cursor: "c1", hash: "h1", user: { id: "u-ada" } };
  const change = { type: "joined", community_id: "c-go", at: "2026-11-22T10:00:00Z", by: "u-admin" };
  const { state: next, update } = applyAnswer(
    state,
    { status: "changed", cursor: "c2", hash: "h2", changes: [change], added: ["c-go"], removed: [], communities: [rust, python, go] },
    LONG_POLL,
  );
  const expected = { communities: [rust, python, go], cursor: "c2", hash: "h2", user: { id: "u-ada" }, serverTime: null };
  // A v1 answer carries no notifications count nor presence: none is made up; nobody types.
  assert.deepEqual(next, { ...expected, notificationsUnread: null, online: null, typing: {} });
  assert.deepEqual(update.added, [go]);
  assert.deepEqual(update.removed, []);
  assert.deepEqual(update.changes, [change]);
  assert.equal(update.status, "changed");
  assert.equal(update.source, LONG_POLL);
});

test("applyAnswer on unchanged keeps the list but takes the new cursor", () => {
  const state = { communities: [rust], cursor: "c1", hash: "h1", user: null };
  const { state: next, update } = applyAnswer(state, { status: "unchanged", cursor: "c9", hash: "h1" }, LONG_POLL);
  assert.equal(next.cursor, "c9");
  assert.equal(next.communities, state.communities);
  assert.deepEqual([update.added, update.removed, update.changes], [[], [], []]);
  assert.equal(update.status, "unchanged");
});

test("applyAnswer on reset replaces the state and still reports what was added and removed", () => {
  const state = { communities: [rust, python], cursor: "old", hash: "h1", user: null };
  const { state: next, update } = applyAnswer(state, { status: "reset", cursor: "new", hash: "h3", communities: [go] }, LONG_POLL);
  assert.deepEqual(next.communities, [go]);
  assert.equal(next.cursor, "new");
  assert.deepEqual(update.added, [go]);
  assert.deepEqual(update.removed, [rust, python]);
  assert.deepEqual(update.changes, []);
  assert.equal(update.status, "reset");
});

test("applyAnswer marks a snapshot as such", () => {
  const { update } = applyAnswer({ communities: [] }, { communities: [rust], cursor: "c", hash: "h" }, SNAPSHOT);
  assert.equal(update.status, SNAPSHOT);
  assert.deepEqual(update.added, [rust]);
});

test("tokenSubject reads sub from a JWT payload without verifying it", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "u-ada", exp: 1 })).toString("base64url");
  assert.equal(tokenSubject(`eyJhbGciOiJIUzI1NiJ9.${payload}.sig`), "u-ada");
  assert.equal(tokenSubject("not a token"), null);
  assert.equal(tokenSubject(null), null);
});

test("isAllowedRelayMessage needs an allowed origin and the type tag", () => {
  const allowed = ["https://app.example"];
  const update = { type: "community-sync:update", update: {} };
  assert.equal(isAllowedRelayMessage({ origin: "https://app.example", data: update }, allowed), true);
  assert.equal(isAllowedRelayMessage({ origin: "https://evil.example", data: update }, allowed), false);
  assert.equal(isAllowedRelayMessage({ origin: "https://app.example", data: { type: "other" } }, allowed), false);
  assert.equal(isAllowedRelayMessage({ origin: "https://app.example", data: "community-sync:update" }, allowed), false);
  assert.equal(isAllowedRelayMessage({ origin: "https://app.example", data: null }, allowed), false);
});

const {
  LoopGuard,
  channelName,
  earlyUnchangedDelay,
  followUpdate,
  interpretResponse,
  isNewerState,
  retryDelay,
} = decisions;

test("retryDelay takes the longer of backoff and Retry-After, and Retry-After: 0 shortens nothing", () => {
  const options = { initialDelay: 100, maxDelay: 1000, multiplier: 2, maxRetryAfter: 60_000 };
  const low = () => 0;
  assert.equal(retryDelay(3, null, options, low), 400);
  assert.equal(retryDelay(3, 0, options, low), 400);
  assert.equal(retryDelay(3, 5_000, options, low), 5_000);
  // Spread over a quarter more, so tabs told the same instant do not return together.
  assert.equal(retryDelay(3, 5_000, options, () => 0.999999), 6_249);
  // A Retry-After far ahead is capped.
  assert.equal(retryDelay(0, 3_600_000, options, low), 60_000);
  // Growth continues while failures repeat, Retry-After or not.
  assert.ok(retryDelay(8, 0, options, low) > retryDelay(1, 0, options, low));
});

test("earlyUnchangedDelay starts at the gap and grows while it keeps happening", () => {
  const options = { maxDelay: 30_000 };
  assert.equal(earlyUnchangedDelay(1, 1000, options, () => 0), 1000);
  assert.equal(earlyUnchangedDelay(1, 1000, options, () => 0.999999), 1999);
  assert.equal(earlyUnchangedDelay(3, 1000, options, () => 0), 4000);
  assert.equal(earlyUnchangedDelay(20, 1000, options, () => 0.5), 30_000);
});

test("LoopGuard trips on too many requests without progress in the window, and progress forgives", () => {
  const guard = new LoopGuard({ maxRequests: 3, window: 1000, pause: 5000 });
  assert.equal(guard.record(0, false), false);
  assert.equal(guard.record(10, false), false);
  assert.equal(guard.record(20, true), false); // news: the count starts over
  for (const at of [30, 40, 50]) assert.equal(guard.record(at, false), false);
  assert.equal(guard.holdFor(50), 0);
  assert.equal(guard.record(60, false), true);
  assert.equal(guard.holdFor(60), 5000);
  assert.equal(guard.holdFor(5059), 1);
  assert.equal(guard.record(70, false), false); // already holding: reported once
  const spaced = new LoopGuard({ maxRequests: 3, window: 1000, pause: 5000 });
  for (let at = 0; at < 10_000; at += 400) assert.equal(spaced.record(at, false), false);
});

test("isNewerState orders one leader by its counter and different leaders by server time", () => {
  const held = { from: "tab-a", seq: 5, serverTime: "2026-11-22T10:00:05.000Z" };
  assert.equal(isNewerState(null, held), true);
  assert.equal(isNewerState(held, { ...held, seq: 6, serverTime: "2026-11-22T10:00:04.990Z" }), true);
  assert.equal(isNewerState(held, { ...held, seq: 5 }), false);
  assert.equal(isNewerState(held, { ...held, seq: 4 }), false);
  assert.equal(isNewerState(held, { from: "tab-b", seq: 1, serverTime: "2026-11-22T10:00:06.000Z" }), true);
  assert.equal(isNewerState(held, { from: "tab-b", seq: 99, serverTime: "2026-11-22T10:00:01.000Z" }), false);
  assert.equal(isNewerState(held, { from: "tab-b", seq: 1, serverTime: null }), true);
});

test("followUpdate diffs against the follower's own list, not the leader's previous one", () => {
  const leaderUpdate = { status: "changed", source: LONG_POLL, added: [go], removed: [], updated: [], changes: [{ type: "joined" }] };
  // This follower missed the message that removed python.
  const update = followUpdate({ communities: [rust, python] }, { communities: [rust, go], serverTime: "t" }, leaderUpdate);
  assert.deepEqual(update.added, [go]);
  assert.deepEqual(update.removed, [python]);
  assert.deepEqual(update.communities, [rust, go]);
  assert.equal(update.status, "changed");
  assert.equal(update.relayed, true);
  assert.deepEqual(update.changes, [{ type: "joined" }]);
});

test("applyAnswer tells progress (a followed cursor moved) from news (a new list)", () => {
  const state = { communities: [rust], cursor: "c1", hash: "h1", user: null, serverTime: null };
  const unchanged = applyAnswer(state, { status: "unchanged", cursor: "c2", hash: "h1" }, LONG_POLL);
  assert.deepEqual([unchanged.progressed, unchanged.news], [true, false]);
  const changed = applyAnswer(state, { status: "changed", cursor: "c2", hash: "h2", communities: [rust, go], changes: [{}] }, LONG_POLL);
  assert.deepEqual([changed.progressed, changed.news], [true, true]);
  // After the cursor was dropped, a reset starts over: not progress.
  const reset = applyAnswer({ ...state, cursor: null }, { status: "reset", cursor: "c9", hash: "h1", communities: [rust] }, LONG_POLL);
  assert.deepEqual([reset.progressed, reset.news], [false, false]);
});

function response(status, body, headers = {}) {
  return { status, statusText: "", headers: new Headers(headers), body };
}

test("interpretResponse reads answers, refusals and failures", () => {
  const now = Date.parse("Sun, 22 Nov 2026 10:00:00 GMT");
  const ok = interpretResponse(response(200, { communities: [] }, { ETag: 'W/"abc"', "X-Poll-Interval": "15" }), SNAPSHOT, now);
  assert.equal(ok.kind, "answer");
  assert.equal(ok.answer.hash, "abc");
  assert.equal(ok.pollInterval, 15_000);
  assert.deepEqual(interpretResponse(response(304, null), SNAPSHOT, now).answer, { status: "unchanged" });
  assert.equal(interpretResponse(response(400, { detail: "cursor" }), LONG_POLL, now).kind, "rejected");
  assert.equal(interpretResponse(response(400, { detail: "x" }), SNAPSHOT, now).kind, "refused");
  assert.equal(interpretResponse(response(401, { detail: "expired" }), LONG_POLL, now).kind, "unauthorized");
  const busy = interpretResponse(response(503, null, { "Retry-After": "Sun, 22 Nov 2026 10:00:30 GMT" }), LONG_POLL, now);
  assert.deepEqual([busy.kind, busy.error.status, busy.error.retryAfter], ["failure", 503, 30_000]);
  // A 200 whose body is not JSON (a captive portal, a truncated answer) is a failure.
  assert.equal(interpretResponse(response(200, undefined), LONG_POLL, now).kind, "failure");
});

test("channelName needs an identity: no shared fallback name", () => {
  assert.equal(channelName("https://api.test/", "u-ada"), "community-sync:https://api.test|u-ada");
  assert.equal(channelName("https://api.test", null), null);
  assert.equal(channelName("https://api.test", ""), null);
  assert.equal(decisions.tokenSubject("a.eyJzdWIiOiIifQ.c"), null); // {"sub": ""}
});

const { NOTIFICATIONS, applyRead, callResult, maskReads, notificationsPage, notificationsUrl, readKey, settleReads, unreadLabel } =
  decisions;

test("applyRead zeroes one community's unread, merges the server's entry, and leaves counts it never had", () => {
  const ada = { id: "c-ada", unread: 4, last_activity_at: "t1" };
  const old = { id: "c-old", name: "Old" }; // from a server without unread counts
  const state = { communities: [ada, old], notificationsUnread: 2 };
  const read = applyRead(state, readKey("c-ada"), { id: "c-ada", unread: 0, last_activity_at: "t2" });
  assert.deepEqual(read.communities, [{ id: "c-ada", unread: 0, last_activity_at: "t2" }, old]);
  assert.equal(read.communities[1], old);
  assert.equal(applyRead(read, readKey("c-ada")), read, "nothing to change: the same state");
  assert.equal(applyRead(state, readKey("c-old")), state);
  assert.equal(applyRead(state, readKey("c-none")), state);
  assert.equal(applyRead(state, NOTIFICATIONS).notificationsUnread, 0);
  assert.equal(applyRead({ ...state, notificationsUnread: null }, NOTIFICATIONS).notificationsUnread, null);
});

test("maskReads hides counts an answer carries from before a pending read", () => {
  const pending = new Map([[readKey("c-a"), { after: 3, since: 0 }], [NOTIFICATIONS, { after: 3, since: 0 }]]);
  const answer = { communities: [{ id: "c-a", unread: 5 }, { id: "c-b", unread: 1 }], notifications_unread: 9 };
  const masked = maskReads(answer, pending);
  assert.deepEqual(masked.communities, [{ id: "c-a", unread: 0 }, { id: "c-b", unread: 1 }]);
  assert.equal(masked.notifications_unread, 0);
  assert.equal(answer.communities[0].unread, 5, "the answer itself is not changed");
  assert.equal(maskReads(answer, new Map()), answer);
  assert.equal(maskReads({ status: "unchanged" }, pending).notifications_unread, undefined);
});

test("settleReads keeps a read until its read change, a later request, or (in flight) its age says it is done", () => {
  const pending = new Map([
    [readKey("c-a"), { after: 4, since: 0 }],
    [readKey("c-b"), { after: Infinity, since: 1000 }],
    [NOTIFICATIONS, { after: 4, since: 0 }],
  ]);
  const keys = (map) => [...map.keys()];
  assert.deepEqual(keys(settleReads(pending, { requestNo: 4, now: 2000, maxAge: 5000 })), keys(pending));
  assert.deepEqual(keys(settleReads(pending, { requestNo: 5, now: 2000, maxAge: 5000 })), [readKey("c-b")]);
  const changes = [{ type: "read", community_id: "c-a" }, { type: "read" }, { type: "activity", community_id: "c-b" }];
  assert.deepEqual(keys(settleReads(pending, { changes, requestNo: 4, now: 2000, maxAge: 5000 })), [readKey("c-b")]);
  assert.deepEqual(keys(settleReads(pending, { requestNo: 4, now: 6001, maxAge: 5000 })), [readKey("c-a"), NOTIFICATIONS]);
});

test("notificationsUrl and notificationsPage read one page of notifications", () => {
  assert.equal(notificationsUrl("http://api.test/"), "http://api.test/me/notifications");
  assert.equal(notificationsUrl("", { cursor: "a+b", limit: 20 }), "/me/notifications?cursor=a%2Bb&limit=20");
  const items = [{ kind: "mention", ref: "m-2" }];
  assert.deepEqual(notificationsPage({ notifications: items, next_cursor: "k" }).nextCursor, "k");
  assert.deepEqual(notificationsPage({ notifications: items, cursor: "k" }).notifications, items);
  assert.deepEqual(notificationsPage(null), { notifications: [], nextCursor: null, body: {} });
});

test("callResult gives the body of a 2xx and a SyncError naming what a 404 means", () => {
  const response = (status, body) => ({ status, statusText: "", headers: new Headers({ "Retry-After": "3" }), body });
  assert.deepEqual(callResult(response(200, { id: "c-a", unread: 0 }), "nope"), { id: "c-a", unread: 0 });
  assert.throws(() => callResult(response(404, { detail: "x" }), "not a member"), { kind: "not-found", status: 404, message: "not a member" });
  assert.throws(() => callResult(response(401, { detail: "expired" }), "-"), { kind: "unauthorized", message: /expired/ });
  assert.throws(() => callResult(response(503, { title: "Busy" }), "-"), { kind: "http", status: 503, retryAfter: 3000 });
});

test("unreadLabel shows the count, and the server's cap of 100 as 99+", () => {
  assert.deepEqual([0, null, undefined, 1, 3, 99, 100].map(unreadLabel), ["", "", "", "1 new", "3 new", "99 new", "99+"]);
});

const { onlineCounts, onlineLabel, presenceList, presenceUrl } = decisions;

test("online counts ride every answer, unchanged included, and a 304 keeps the last ones", () => {
  const state = { communities: [rust], cursor: "c1", hash: "h1", user: null, online: { "c-rust": 1 } };
  const { state: next, update, news } = applyAnswer(
    state, { status: "unchanged", cursor: "c2", hash: "h1", online: { "c-rust": 4 } }, LONG_POLL,
  );
  assert.deepEqual(next.online, { "c-rust": 4 });
  assert.deepEqual(update.online, { "c-rust": 4 });
  // Not news: a count is not the state, and forgives no loop.
  assert.equal(news, false);
  const kept = applyAnswer(next, { status: "unchanged" }, SNAPSHOT);
  assert.deepEqual(kept.state.online, { "c-rust": 4 });
});

test("onlineCounts keeps whole counts only", () => {
  assert.deepEqual(onlineCounts({ a: 2, b: -1, c: "3", d: 1.5, e: 0 }), { a: 2, e: 0 });
  assert.equal(onlineCounts(null), null);
  assert.equal(onlineCounts([1]), null);
});

test("presenceUrl and presenceList read a community's presence", () => {
  assert.equal(presenceUrl("http://api.test/", "c/1"), "http://api.test/communities/c%2F1/presence");
  assert.equal(presenceUrl("http://api.test", "c-1", "thread:t 1"),
    "http://api.test/communities/c-1/presence?topic=thread%3At%201");
  const users = [{ id: "u-ada", name: "Ada", since: "2026-11-22T10:00:00Z" }];
  assert.deepEqual(presenceList({ online: 3, users, truncated: true }), { online: 3, users, truncated: true });
  assert.deepEqual(presenceList(null), { online: 0, users: [], truncated: false });
  assert.deepEqual([0, null, 1, 12].map(onlineLabel), ["", "", "1 online", "12 online"]);
});
