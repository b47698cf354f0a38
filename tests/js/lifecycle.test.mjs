// The client's lifecycle: what stop(), an interrupt or the app's signal do to a request
// whose token is still being fetched, and what each listener costs once its use ended.
import { test } from "node:test";
import assert from "node:assert/strict";

import { json, later, rust, scriptedFetch, snapshot, start, until, useInProcessLocks } from "./support.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const unchanged = () => json({ status: "unchanged", cursor: "c1", hash: "h1" });

/** A getToken that answers at once, except for the calls `held` names, which wait for the test. */
function heldTokens(held) {
  const pending = [];
  let calls = 0;
  const getToken = ({ forceRefresh }) => {
    calls += 1;
    if (!held.includes(calls)) return Promise.resolve(forceRefresh ? "fresh" : "stale");
    const token = later();
    pending.push(token);
    return token.answer();
  };
  return { getToken, pending, calls: () => calls };
}

test("stop() while getToken is pending sends nothing", async (t) => {
  const fetch = scriptedFetch([]);
  const tokens = heldTokens([1]);
  const { sync } = start(fetch, { getToken: tokens.getToken });
  t.after(() => sync.stop());
  await until(() => tokens.pending.length === 1);
  sync.stop();
  tokens.pending[0].release("stale");
  await sleep(30);
  assert.equal(fetch.requests.length, 0);
  assert.equal(sync.status, "stopped");
});

test("refresh() while a long poll waits for its token cuts that poll short", async (t) => {
  const fetch = scriptedFetch([snapshot([rust]), unchanged()]);
  const tokens = heldTokens([3]);
  const { sync } = start(fetch, { getToken: tokens.getToken });
  t.after(() => sync.stop());
  await until(() => tokens.pending.length === 1);
  assert.equal(fetch.requests.length, 2);
  sync.refresh();
  tokens.pending[0].release("stale");
  // The poll that waited is not sent, or cut short: the refresh asks anew, with a token
  // of its own, rather than wait for a held poll to time out.
  await until(() => tokens.calls() >= 4, 2_000);
  assert.ok(fetch.requests.slice(2, -1).every((request) => request.signal.aborted));
});

test("a signal aborted before creation means nothing is ever sent", async () => {
  const controller = new AbortController();
  controller.abort();
  const fetch = scriptedFetch([]);
  const { sync } = start(fetch, { signal: controller.signal });
  await assert.rejects(sync.markRead("c-rust"), { name: "SyncError" });
  await assert.rejects(sync.join("c-go"), { name: "SyncError" });
  await sleep(20);
  assert.equal(fetch.requests.length, 0);
  assert.equal(sync.status, "stopped");
});

/** Abort listeners added to signals that are still live and never removed. */
function countAbortListeners(t) {
  const live = new Set();
  const proto = AbortSignal.prototype;
  const { addEventListener: add, removeEventListener: remove } = EventTarget.prototype;
  proto.addEventListener = function (type, listener, options) {
    if (type === "abort") live.add({ signal: this, listener });
    return add.call(this, type, listener, options);
  };
  proto.removeEventListener = function (type, listener, options) {
    if (type === "abort") for (const entry of live) if (entry.signal === this && entry.listener === listener) live.delete(entry);
    return remove.call(this, type, listener, options);
  };
  t.after(() => {
    delete proto.addEventListener;
    delete proto.removeEventListener;
  });
  return () => [...live].filter((entry) => !entry.signal.aborted).length;
}

test("joining the election again and again leaves no listener behind", async (t) => {
  useInProcessLocks();
  const listeners = countAbortListeners(t);
  const denied = () => json({ title: "Unauthorized", status: 401, detail: "expired" }, { status: 401 });
  const fetch = async () => {
    fetch.count += 1;
    return denied();
  };
  fetch.count = 0;
  const { sync } = start(fetch, { election: "locks", channelKey: "u-ada" });
  t.after(() => sync.stop());
  const cycle = async (until_) => {
    while (fetch.count < until_) {
      if (sync.status === "unauthorized" && !sync.isLeader) sync.reconnect();
      await sleep(5);
    }
  };
  await cycle(4);
  const before = listeners();
  await cycle(24);
  assert.ok(listeners() <= before, `${listeners()} live abort listeners after 24 requests, ${before} after 4`);
});
