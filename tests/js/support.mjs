// Shared by the fetch-loop tests: a scripted fetch, a started client, answers.
import client from "./client.mjs";

const { createCommunitySync } = client;

export const rust = { id: "c-rust", slug: "rust", name: "Rust", role: "member" };
export const go = { id: "c-go", slug: "go", name: "Go", role: "member" };

export function json(body, { status = 200, headers = {} } = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

/**
 * A fetch that answers from `script`, one entry per request. An entry is a Response,
 * a function (request) => Response | Promise, or an Error to throw. When the script
 * runs out, requests hang until aborted, like a long poll with nothing to say.
 */
export function scriptedFetch(script) {
  const requests = [];
  let waiting = null;
  const fetch = async (url, init) => {
    const request = { url: new URL(url, "http://api.test"), method: init.method ?? "GET", headers: init.headers, signal: init.signal };
    requests.push(request);
    waiting?.();
    const step = script.shift();
    if (step === undefined) {
      return new Promise((_, reject) => {
        init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      });
    }
    if (step instanceof Error) throw step;
    return typeof step === "function" ? step(request) : step;
  };
  fetch.requests = requests;
  fetch.untilRequests = (n) =>
    new Promise((resolve) => {
      const check = () => (requests.length >= n ? resolve(requests) : (waiting = check));
      check();
    });
  return fetch;
}

/** A fetch that sends the loop's requests to `script` and every other one to `calls`. */
export function withCalls(script, calls) {
  const loop = scriptedFetch(script);
  const made = [];
  const fetch = async (url, init) => {
    const parsed = new URL(url, "http://api.test");
    const isLoop = parsed.pathname === "/me/communities" || parsed.pathname === "/community-changes/poll";
    if (isLoop && (init.method ?? "GET") === "GET") return loop(url, init);
    const request = { url: parsed, method: init.method, headers: init.headers, body: init.body };
    made.push(request);
    return calls(request);
  };
  return Object.assign(fetch, { loop, calls: made });
}

/** A response the test hands out later: `{answer, release(response)}`. */
export function later() {
  let release;
  const answer = new Promise((resolve) => {
    release = resolve;
  });
  return { answer: () => answer, release };
}

/**
 * Resolves once `condition()` holds; throws after `within` ms, so that a test that
 * fails by waiting forever ends, and its run with it.
 */
export const until = async (condition, within = 8_000) => {
  const deadline = Date.now() + within;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`still not so after ${within} ms: ${condition}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
};

export function start(fetch, options = {}) {
  const updates = [];
  const statuses = [];
  const errors = [];
  const tokens = [];
  const sync = createCommunitySync({
    baseUrl: "http://api.test",
    election: "none",
    fetch,
    getToken: async (opts) => {
      tokens.push(opts);
      return opts.forceRefresh ? "fresh" : "stale";
    },
    onError: (error) => errors.push(error),
    backoff: { initialDelay: 1, maxDelay: 5 },
    ...options,
  });
  sync.subscribe((update) => updates.push(update));
  sync.onStatus((status) => statuses.push(status));
  return { sync, updates, statuses, errors, tokens };
}

export const snapshot = (communities, cursor = "c1", hash = "h1") =>
  json({ user: { id: "u-ada", name: "Ada" }, communities, hash, cursor, server_time: "t" }, { headers: { ETag: `"${hash}"` } });


/** Web Locks as the client uses them: exclusive, queued, held until the callback settles. */
function inProcessLocks() {
  const queues = new Map();
  return {
    request(name, { signal } = {}, callback) {
      return new Promise((resolve, reject) => {
        const queue = queues.get(name) ?? [];
        queues.set(name, queue);
        const entry = {
          async grant() {
            try {
              resolve(await callback({ name }));
            } catch (error) {
              reject(error);
            } finally {
              queue.shift();
              queue[0]?.grant();
            }
          },
        };
        signal?.addEventListener("abort", () => {
          const at = queue.indexOf(entry);
          if (at > 0) {
            queue.splice(at, 1);
            reject(new DOMException("aborted", "AbortError"));
          }
        });
        queue.push(entry);
        if (queue.length === 1) entry.grant();
      });
    },
  };
}

/**
 * For tests of several tabs in one process: Web Locks where Node has none, a small
 * in-process stand-in that grants one lock holder at a time.
 */
export function useInProcessLocks() {
  if (typeof globalThis.navigator?.locks?.request !== "function") {
    Object.defineProperty(globalThis, "navigator", { value: { locks: inProcessLocks() }, configurable: true });
  }
}

/**
 * A server for one tab: `snapshot()` at once, each poll held until the test answers it
 * (`poll.respond(response)`) or the client aborts it, as a browser's fetch does; every
 * other request (the app's calls) goes to `calls(request)`, recorded in `fetch.calls`.
 */
export function heldPolls(snapshot, calls = () => new Response(null, { status: 204 })) {
  const requests = [];
  const made = [];
  const fetch = (url, init) => {
    const parsed = new URL(url, "http://api.test");
    const method = init.method ?? "GET";
    if (method !== "GET" || (parsed.pathname !== "/me/communities" && parsed.pathname !== "/community-changes/poll")) {
      const request = { url: parsed, method, headers: init.headers, body: init.body };
      made.push(request);
      return Promise.resolve(calls(request));
    }
    return new Promise((resolve, reject) => {
      const request = { url: parsed, signal: init.signal, respond: resolve };
      requests.push(request);
      if (parsed.pathname === "/me/communities") return resolve(snapshot());
      init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
    });
  };
  const polls = () => requests.filter((request) => request.url.pathname === "/community-changes/poll");
  const untilPolls = async (n) => (await until(() => polls().length >= n), polls());
  return Object.assign(fetch, { requests, calls: made, polls, untilPolls });
}
