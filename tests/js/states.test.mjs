// The client's states: waking from paused or offline, a token the server keeps refusing,
// a permanent refusal, a change of user, and a client created outside a browser; and,
// as pure transitions, the tab's role and what it holds.
import { test } from "node:test";
import assert from "node:assert/strict";

import client, { decisions } from "./client.mjs";
import { json, rust, scriptedFetch, snapshot, start, until } from "./support.mjs";

const { createCommunitySync } = client;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const problem = (status, detail) => json({ type: "about:blank", title: "Refused", status, detail }, { status });

test("back online, the first poll is a timeout=0 catch-up, not a held poll", async (t) => {
  const navigator = { onLine: true };
  Object.defineProperty(globalThis, "navigator", { value: navigator, configurable: true });
  t.after(() => delete globalThis.navigator);
  const fetch = scriptedFetch([snapshot([rust])]);
  const { sync, statuses } = start(fetch);
  t.after(() => sync.stop());
  const [, held] = await fetch.untilRequests(2);
  assert.equal(held.url.searchParams.get("timeout"), "25");
  navigator.onLine = false;
  globalThis.window.dispatchEvent(new Event("offline"));
  await until(() => sync.status === "offline");
  navigator.onLine = true;
  globalThis.window.dispatchEvent(new Event("online"));
  const requests = await fetch.untilRequests(3);
  assert.equal(requests[2].url.searchParams.get("timeout"), "0");
  assert.notEqual(statuses.at(-1), "offline");
});

test("visible again, the first poll is a timeout=0 catch-up", async (t) => {
  const page = new EventTarget();
  page.visibilityState = "visible";
  globalThis.document = page;
  t.after(() => delete globalThis.document);
  const fetch = scriptedFetch([snapshot([rust])]);
  const { sync } = start(fetch);
  t.after(() => sync.stop());
  await fetch.untilRequests(2);
  page.visibilityState = "hidden";
  page.dispatchEvent(new Event("visibilitychange"));
  await until(() => sync.status === "paused");
  page.visibilityState = "visible";
  page.dispatchEvent(new Event("visibilitychange"));
  const requests = await fetch.untilRequests(3);
  assert.equal(requests[2].url.searchParams.get("timeout"), "0");
  assert.equal(sync.status, "connecting");
});

test("a 401 after a forced refresh is retried with backoff, forcing a refresh, and told to onUnauthorized", async (t) => {
  const denied = () => problem(401, "expired");
  const fetch = scriptedFetch([denied(), denied(), denied(), snapshot([rust])]);
  const told = [];
  const { sync, tokens, statuses, errors } = start(fetch, { onUnauthorized: (error) => told.push(error) });
  t.after(() => sync.stop());
  await until(() => sync.status === "live");
  assert.deepEqual(tokens.slice(0, 4).map((asked) => asked.forceRefresh), [false, true, true, true]);
  assert.ok(statuses.includes("unauthorized"));
  assert.deepEqual(told.map((error) => [error.kind, error.status]), [["unauthorized", 401], ["unauthorized", 401]]);
  assert.equal(errors.length, 2);
});

for (const [status, transport] of [[403, "snapshot"], [404, "poll"], [410, "poll"]]) {
  test(`a ${status} to a ${transport} is the terminal error status, the problem attached`, async (t) => {
    const script = transport === "snapshot" ? [problem(status, "suspended")] : [snapshot([rust]), problem(status, "suspended")];
    const fetch = scriptedFetch(script);
    const { sync, statuses } = start(fetch);
    t.after(() => sync.stop());
    await until(() => sync.status === "error");
    assert.equal(sync.error.status, status);
    assert.equal(sync.error.problem.detail, "suspended");
    const sent = fetch.requests.length;
    await sleep(50);
    assert.equal(fetch.requests.length, sent);
    assert.equal(statuses.at(-1), "error");
    // reconnect() starts over.
    sync.reconnect();
    await fetch.untilRequests(sent + 1);
    assert.equal(sync.error, null);
  });
}

for (const status of [408, 429]) {
  test(`a ${status} is retried, not an error`, async (t) => {
    const fetch = scriptedFetch([problem(status, "later"), snapshot([rust])]);
    const { sync } = start(fetch);
    t.after(() => sync.stop());
    await fetch.untilRequests(3);
    assert.notEqual(sync.status, "error");
  });
}

/** A JWT the client can read the subject of (the signature is the server's business). */
const jwt = (sub) => `e30.${Buffer.from(JSON.stringify({ sub })).toString("base64url")}.sig`;
const subjectOf = (authorization) => JSON.parse(Buffer.from(authorization.split(".")[1], "base64url")).sub;

test("another user's token clears the previous user's state and caches before the first answer", async (t) => {
  let user = "u-ada";
  const requests = [];
  const hang = (signal) => new Promise((_, reject) => signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
  const fetch = async (url, init) => {
    const { pathname } = new URL(url);
    const sub = subjectOf(init.headers.Authorization);
    requests.push({ pathname, sub, headers: init.headers });
    if (pathname.endsWith("/presence")) return json({ online: 1, users: [], truncated: false }, { headers: { ETag: '"p1"' } });
    if (pathname === "/me/communities" && sub === "u-ada") return snapshot([rust]);
    return hang(init.signal);
  };
  const { sync, updates } = start(fetch, { getToken: async () => jwt(user) });
  t.after(() => sync.stop());
  await until(() => updates.length === 1);
  await sync.presence("c-rust");

  user = "u-bob";
  sync.refresh();
  await until(() => requests.some((request) => request.pathname === "/me/communities" && request.sub === "u-bob"));
  assert.deepEqual(sync.communities, []);
  assert.deepEqual(updates.at(-1).communities, []);
  assert.deepEqual(updates.at(-1).removed, [rust]);
  await sync.presence("c-rust");
  const asked = requests.filter((request) => request.pathname.endsWith("/presence"));
  assert.equal(asked[1].sub, "u-bob");
  assert.equal(asked[1].headers["If-None-Match"], undefined);
});

test("outside a browser (a framework's server side) nothing is polled", async (t) => {
  const page = globalThis.window;
  delete globalThis.window;
  t.after(() => (globalThis.window = page));
  const fetch = scriptedFetch([snapshot([rust])]);
  let asked = 0;
  const sync = createCommunitySync({ fetch, getToken: async () => (asked++, "t") });
  t.after(() => sync.stop());
  await sleep(50);
  assert.equal(fetch.requests.length, 0);
  assert.equal(asked, 0);
  assert.equal(sync.status, "connecting");
});

// --- the transition function, on its own -----------------------------------------

const { ROLE, STATUS, initialMachine, isPermanent, nextRequest, transition } = decisions;
const run = (events, machine = initialMachine()) => events.reduce(transition, machine);
const loopPart = ({ status, catchUp, error }) => ({ status, catchUp, error });

test("transition: waking from paused or offline owes a catch-up and says connecting", () => {
  const live = run([{ type: "lead" }, { type: "answer", mode: "long-poll" }]);
  assert.deepEqual(loopPart(live), { status: STATUS.LIVE, catchUp: false, error: null });
  for (const type of ["pause", "offline"]) {
    const woken = run([{ type }, { type: "wake" }], live);
    assert.deepEqual(loopPart(woken), { status: STATUS.CONNECTING, catchUp: true, error: null });
  }
  // Waking while live changes nothing.
  assert.equal(transition(live, { type: "wake" }), live);
  assert.equal(run([{ type: "answer", mode: "smart-poll" }], live).status, STATUS.SMART);
});

test("transition: error is left only by reconnect, another user or stop; stopped is final", () => {
  const error = { status: 403 };
  const refused = run([{ type: "lead" }, { type: "refused", error }]);
  assert.deepEqual([refused.status, refused.error], [STATUS.ERROR, error]);
  for (const type of ["answer", "failure", "unauthorized", "wake", "lead", "pause"]) {
    assert.equal(transition(refused, { type, mode: "long-poll" }), refused, type);
  }
  for (const type of ["reconnect", "user"]) assert.deepEqual(transition(refused, { type }), { ...initialMachine(), role: ROLE.LEADER });
  const stopped = transition(refused, { type: "stop" });
  assert.equal(stopped.status, STATUS.STOPPED);
  for (const type of ["reconnect", "user", "answer", "lead", "adopt", "queue"]) assert.equal(transition(stopped, { type }), stopped);
});

test("transition: unauthorized lasts through a new leadership until an answer", () => {
  const refused = run([{ type: "lead" }, { type: "unauthorized" }, { type: "lead" }]);
  assert.equal(refused.status, STATUS.UNAUTHORIZED);
  assert.equal(transition(refused, { type: "answer", mode: "long-poll" }).status, STATUS.LIVE);
  assert.equal(transition(refused, { type: "failure", offline: true }).status, STATUS.OFFLINE);
  assert.equal(transition(refused, { type: "follow", status: "nonsense" }), refused);
});

test("transition: a tab follows, leads, resigns, steps down out of the queue and rejoins it; stopped, it leads no more", () => {
  assert.equal(initialMachine().role, ROLE.FOLLOWER);
  const leading = run([{ type: "lead" }]);
  assert.equal(leading.role, ROLE.LEADER);
  assert.equal(transition(leading, { type: "resign" }).role, ROLE.FOLLOWER);
  const out = run([{ type: "unauthorized" }, { type: "resign" }, { type: "step-down" }], leading);
  assert.deepEqual([out.role, out.status], [ROLE.STEPPED_DOWN, STATUS.UNAUTHORIZED]);
  // Following a live leader, or reconnect(), puts it back in the queue; only from there.
  const queued = run([{ type: "follow", status: STATUS.LIVE }, { type: "queue" }], out);
  assert.deepEqual([queued.role, queued.status], [ROLE.FOLLOWER, STATUS.LIVE]);
  assert.equal(transition(leading, { type: "queue" }), leading);
  assert.equal(transition(leading, { type: "stop" }).role, ROLE.FOLLOWER);
});

test("transition: the role moves while the status holds in error", () => {
  // A follower shows its leader's error; when that tab closes it takes over, and waits.
  const follower = run([{ type: "follow", status: STATUS.ERROR }]);
  const leading = transition(follower, { type: "lead" });
  assert.deepEqual([leading.role, leading.status], [ROLE.LEADER, STATUS.ERROR]);
  const resigned = transition(leading, { type: "resign" });
  assert.deepEqual([resigned.role, resigned.status], [ROLE.FOLLOWER, STATUS.ERROR]);
  assert.equal(transition(leading, { type: "adopt" }).held, true);
});

test("transition: a state is held from the first adopted until another user's token", () => {
  assert.equal(initialMachine().held, false);
  const held = run([{ type: "lead" }, { type: "adopt" }, { type: "answer", mode: "long-poll" }]);
  assert.equal(held.held, true);
  assert.equal(transition(held, { type: "adopt" }), held);
  for (const type of ["reconnect", "failure", "pause", "resign", "refused"]) assert.equal(transition(held, { type }).held, true, type);
  const other = transition(held, { type: "user" });
  assert.deepEqual([other.held, other.revalidated], [false, false]);
});

test("transition: revalidated says what the last answer said, until another one", () => {
  const held = run([{ type: "lead" }, { type: "adopt" }]);
  const revalidated = transition(held, { type: "answer", mode: "long-poll", revalidated: true });
  assert.equal(revalidated.revalidated, true);
  assert.equal(transition(revalidated, { type: "failure" }).revalidated, true);
  assert.equal(transition(revalidated, { type: "answer", mode: "long-poll" }).revalidated, false);
});

test("nextRequest: a snapshot, a conditional one after a rejected cursor, a catch-up, then the transport", () => {
  const snapshot = { source: "snapshot", transport: "snapshot" };
  assert.deepEqual(nextRequest(initialMachine(), "c1", "long-poll"), snapshot);
  const held = run([{ type: "lead" }, { type: "adopt" }]);
  assert.deepEqual(nextRequest(held, null, "long-poll"), { ...snapshot, conditional: true });
  // A 304 to that confirms the list: a poll without a cursor gets a fresh one at once.
  const confirmed = transition(held, { type: "answer", mode: "long-poll", revalidated: true });
  assert.deepEqual(nextRequest(confirmed, null, "long-poll"), { source: "long-poll", transport: "long-poll" });
  assert.deepEqual(nextRequest(held, "c1", "long-poll"), { source: "smart-poll", transport: "smart-poll", catchUp: true });
  const live = transition(held, { type: "answer", mode: "long-poll" });
  assert.deepEqual(nextRequest(live, "c1", "smart-poll"), { source: "smart-poll", transport: "smart-poll" });
  assert.equal(nextRequest(run([{ type: "pause" }, { type: "wake" }], live), "c1", "long-poll").catchUp, true);
});

test("isPermanent: a 4xx but 401, 408 and 429", () => {
  assert.deepEqual([400, 403, 404, 410, 422].map(isPermanent), [true, true, true, true, true]);
  assert.deepEqual([401, 408, 429, 500, 503, 304].map(isPermanent), [false, false, false, false, false, false]);
});
