import { test } from "node:test";
import assert from "node:assert/strict";

import client from "./client.mjs";

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
  isAllowedRelayMessage,
  parsePollInterval,
  parseRetryAfter,
  recordTransportOutcome,
  tokenSubject,
} = client;

const rust = { id: "c-rust", name: "Rust", role: "member" };
const python = { id: "c-python", name: "Python", role: "moderator" };
const go = { id: "c-go", name: "Go", role: "member" };

test("backoffDelay grows exponentially under full jitter and stops at the cap", () => {
  const options = { initialDelay: 100, maxDelay: 1000, multiplier: 2 };
  const top = () => 0.999999;
  assert.equal(backoffDelay(0, options, top), 99);
  assert.equal(backoffDelay(1, options, top), 199);
  assert.equal(backoffDelay(3, options, top), 799);
  assert.equal(backoffDelay(4, options, top), 999);
  assert.equal(backoffDelay(50, options, top), 999);
  assert.equal(backoffDelay(3, options, () => 0), 0);
  assert.equal(backoffDelay(3, options, () => 0.5), 400);
});

test("backoffDelay stays within [0, ceiling) with the real random source", () => {
  for (let attempt = 0; attempt < 20; attempt++) {
    const delay = backoffDelay(attempt, { initialDelay: 10, maxDelay: 500 });
    assert.ok(delay >= 0 && delay < Math.min(500, 10 * 2 ** attempt), `attempt ${attempt}: ${delay}`);
  }
});

test("backoffDelay falls back to the defaults for missing options", () => {
  assert.equal(backoffDelay(0, {}, () => 0.5), 250);
  assert.equal(backoffDelay(100, {}, () => 0.5), 15000);
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
  assert.deepEqual(next, { communities: [rust, python, go], cursor: "c2", hash: "h2", user: { id: "u-ada" } });
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
