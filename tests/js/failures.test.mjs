// The fetch loop under failures that used to turn into floods, stalls or silent
// outages. Request counts are upper bounds over a window (a slow machine only sends
// fewer); waits are bounded by the test timeout, never measured.
import { test } from "node:test";
import assert from "node:assert/strict";

import { json, rust, scriptedFetch, snapshot, start } from "./support.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Small but real delays, and no loop guard, so that the backoff alone is under test.
const PACED = { backoff: { initialDelay: 20, maxDelay: 100 }, loopGuard: { maxRequests: 1e9 } };

/** A fetch answering every request with `answer(request)`, counting them. */
function answering(answer) {
  const requests = [];
  const fetch = async (url, init) => {
    const request = { url: new URL(url, "http://api.test"), headers: init.headers, signal: init.signal };
    requests.push(request);
    return answer(request, requests.length);
  };
  fetch.requests = requests;
  return fetch;
}

const isSnapshot = (request) => request.url.pathname === "/me/communities";
const badRequest = () => json({ title: "Bad Request", status: 400, detail: "timeout must be whole seconds" }, { status: 400 });

test("a poll answered 400 every time is retried with growing waits, not at once", async (t) => {
  const fetch = answering((request) =>
    isSnapshot(request)
      ? request.headers["If-None-Match"]
        ? new Response(null, { status: 304, headers: { ETag: '"h1"' } })
        : snapshot([rust])
      : badRequest(),
  );
  const { sync, errors } = start(fetch, PACED);
  t.after(() => sync.stop());
  await sleep(1000);
  // Two requests (revalidate, poll) per failure, at least 50 ms apart once at the cap:
  // about 40 at most in a second. Without pacing it was thousands.
  assert.ok(fetch.requests.length <= 45, `${fetch.requests.length} requests in 1 s`);
  assert.ok(errors.length >= 3 && errors.every((e) => e.status === 400));
  assert.equal(sync.status, "reconnecting");
});

test("a fractional pollTimeout is sent as whole seconds, which the server accepts", async (t) => {
  const fetch = scriptedFetch([snapshot([rust])]);
  const { sync } = start(fetch, { pollTimeout: 2.5 });
  t.after(() => sync.stop());
  const [, poll] = await fetch.untilRequests(2);
  assert.equal(poll.url.searchParams.get("timeout"), "2");
});

for (const [name, retryAfter] of [
  ["Retry-After: 0", "0"],
  ["a Retry-After date in the past", "Sun, 22 Nov 2020 10:00:00 GMT"],
]) {
  test(`503 with ${name} still waits the growing backoff`, async (t) => {
    const fetch = answering((request) =>
      isSnapshot(request) ? snapshot([rust]) : json({ status: 503 }, { status: 503, headers: { "Retry-After": retryAfter } }),
    );
    const { sync, errors } = start(fetch, PACED);
    t.after(() => sync.stop());
    await sleep(1000);
    assert.ok(fetch.requests.length <= 25, `${fetch.requests.length} requests in 1 s`);
    assert.equal(errors[0].retryAfter, 0);
  });
}

test("Retry-After longer than the backoff is honoured", async (t) => {
  const fetch = scriptedFetch([snapshot([rust]), json({ status: 429 }, { status: 429, headers: { "Retry-After": "60" } })]);
  const { sync, errors } = start(fetch, PACED);
  t.after(() => sync.stop());
  await fetch.untilRequests(2);
  await sleep(300);
  assert.equal(fetch.requests.length, 2);
  assert.equal(errors[0].retryAfter, 60_000);
});

test("the loop guard holds off a client that asks fast without learning anything", async (t) => {
  // A broken server (or proxy) answering `reset` at once with the same list forever:
  // each answer is a success, so only the guard can tell it is a loop.
  let n = 0;
  const fetch = answering((request) =>
    isSnapshot(request) ? snapshot([rust]) : json({ status: "reset", cursor: `c${++n}`, hash: "h1", communities: [rust] }),
  );
  const { sync, errors, statuses } = start(fetch, { loopGuard: { maxRequests: 10, window: 10_000, pause: 60_000 } });
  t.after(() => sync.stop());
  await sleep(500);
  assert.ok(fetch.requests.length <= 12, `${fetch.requests.length} requests`);
  assert.equal(errors.filter((e) => e.kind === "loop").length, 1);
  assert.equal(statuses.at(-1), "reconnecting");
  // A wake-up does not lift the hold.
  sync.refresh();
  await sleep(100);
  assert.ok(fetch.requests.length <= 12, `${fetch.requests.length} requests after refresh()`);
});

test("a long poll answered unchanged at once (a draining worker) is repeated within seconds", { timeout: 10_000 }, async (t) => {
  const fetch = scriptedFetch([
    snapshot([rust]),
    // Under load the server advises a long smart-poll interval; it is not for long polls.
    json({ status: "unchanged", cursor: "c2", hash: "h1" }, { headers: { "X-Poll-Interval": "480" } }),
  ]);
  const { sync, statuses } = start(fetch);
  t.after(() => sync.stop());
  const requests = await fetch.untilRequests(3);
  assert.equal(requests[2].url.searchParams.get("cursor"), "c2");
  assert.equal(requests[2].url.searchParams.get("timeout"), "25");
  assert.equal(statuses.at(-1), "live");
});

test("an onError, subscriber or onStatus that throws does not stop the loop", async (t) => {
  const reported = t.mock.method(console, "error", () => {});
  const fetch = scriptedFetch([
    snapshot([rust]),
    json({ status: 503 }, { status: 503 }),
    json({ status: "unchanged", cursor: "c2", hash: "h1" }),
  ]);
  const { sync, updates } = start(fetch, {
    onError: () => {
      throw new Error("bug in onError");
    },
    onStatus: () => {
      throw new Error("bug in onStatus");
    },
  });
  t.after(() => sync.stop());
  sync.subscribe(() => {
    throw new Error("bug in a subscriber");
  });
  const requests = await fetch.untilRequests(4);
  assert.equal(requests[3].url.searchParams.get("cursor"), "c2");
  assert.deepEqual(updates.map((u) => u.status), ["snapshot", "unchanged"]);
  assert.equal(sync.status, "live");
  const messages = reported.mock.calls.map((call) => String(call.arguments[0]?.message));
  for (const bug of ["bug in onError", "bug in onStatus", "bug in a subscriber"]) assert.ok(messages.includes(bug), bug);
});

test("a getToken that fails at start and an onError that throws still leave the tab polling", async (t) => {
  t.mock.method(console, "error", () => {});
  let calls = 0;
  const fetch = scriptedFetch([snapshot([rust])]);
  const { sync } = start(fetch, {
    election: "auto",
    getToken: async () => {
      calls += 1;
      if (calls === 1) throw new Error("session not ready");
      return "token";
    },
    onError: () => {
      throw new Error("bug in onError");
    },
  });
  t.after(() => sync.stop());
  await fetch.untilRequests(2);
  assert.equal(sync.isLeader, true);
});

test("a response whose body stalls times out and is retried", { timeout: 10_000 }, async (t) => {
  const stalled = (request) =>
    new Response(
      new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('{"communities": ['));
          // Like a real fetch: aborting the request errors its body.
          request.signal.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
        },
      }),
      { headers: { "Content-Type": "application/json" } },
    );
  const fetch = scriptedFetch([stalled, snapshot([rust])]);
  const { sync, errors, updates } = start(fetch, { requestTimeout: 100 });
  t.after(() => sync.stop());
  await fetch.untilRequests(3);
  assert.equal(errors[0].kind, "timeout");
  assert.deepEqual(updates.map((u) => u.status), ["snapshot"]);
});

test("a tab becoming visible cuts a backoff wait short", { timeout: 10_000 }, async (t) => {
  const page = new EventTarget();
  page.visibilityState = "visible";
  globalThis.document = page;
  t.after(() => delete globalThis.document);
  const fetch = scriptedFetch([snapshot([rust]), json({ status: 503 }, { status: 503 })]);
  const { sync } = start(fetch, { backoff: { initialDelay: 600_000, maxDelay: 600_000 } });
  t.after(() => sync.stop());
  await fetch.untilRequests(2);
  await sleep(50);
  assert.equal(fetch.requests.length, 2);
  page.dispatchEvent(new Event("visibilitychange"));
  await fetch.untilRequests(3);
});

test("stop() removes its listener from the signal it was given", async () => {
  const signal = new AbortController().signal;
  const added = [];
  const removed = [];
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = (type, listener, options) => (added.push(listener), add(type, listener, options));
  signal.removeEventListener = (type, listener, options) => (removed.push(listener), remove(type, listener, options));
  const fetch = scriptedFetch([snapshot([rust])]);
  const { sync } = start(fetch, { signal });
  await fetch.untilRequests(2);
  sync.stop();
  assert.equal(added.length, 1);
  assert.deepEqual(removed, added);
});
