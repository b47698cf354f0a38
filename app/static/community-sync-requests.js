/**
 * Every request of community-sync.js, the loop's and the app's calls alike: a token
 * from the app, then fetch, each tied to stop(), to its own timeout and (the loop's)
 * to an interrupt before anything is awaited, and read to the end. Notices a token for
 * another user before it is used. Internal: not an entry point of the package.
 */
import { SyncError, callResult, tokenSubject } from "./community-sync-decisions.js";

export class Requests {
  #fetch;
  #getToken;
  #stopped;
  #requestTimeout;
  #onUserChange;
  #loop = null; // the controller of the loop's request in flight, for interruptLoop()
  // The user of the tokens last used: another one's token clears what the tab holds.
  #user = null;

  /**
   * `stopped`: the client's stop signal; `onUserChange()`: called when a token is for
   * another user than the one before, before that token is used.
   */
  constructor({ fetch, getToken, stopped, requestTimeout, onUserChange }) {
    this.#fetch = fetch;
    this.#getToken = getToken;
    this.#stopped = stopped;
    this.#requestTimeout = requestTimeout;
    this.#onUserChange = onUserChange;
  }

  /** The user the tokens are for, as read at start (the shared channel's identity). */
  expectUser(subject) {
    if (this.#user === null) this.#user = subject;
  }

  /** Cut the loop's request short (a refresh, a resign, the watches moved), token wait included. */
  interruptLoop() {
    this.#loop?.abort();
  }

  /** A call the app asked for, outside the loop: the body, or a thrown SyncError. */
  async call(method, url, notFound, payload = undefined, { outlivesStop = false } = {}) {
    return callResult(await this.authorized(url, { method, payload, outlivesStop }), notFound);
  }

  /**
   * A call outside the loop, within `requestTimeout`, sent again with a fresh token
   * after a 401 (which the server answers before looking at the request, so nothing
   * was done): the response, read.
   */
  async authorized(url, { method = "GET", headers = {}, payload = undefined, outlivesStop = false } = {}) {
    const request = { method, headers, payload, outlivesStop, timeout: this.#requestTimeout };
    const response = await this.send(url, { ...request, forceRefresh: false });
    if (response.status !== 401) return response;
    return this.send(url, { ...request, forceRefresh: true });
  }

  /**
   * Send one request with a token: `{status, statusText, headers, body}`. `loop`
   * requests are the ones interruptLoop() cuts short, and are dropped when `stale()`
   * says so once the token arrived; any request ends with stop(), except one that
   * `outlivesStop` (what stop() itself sends). The timeout covers the token and the
   * body too, since a stalled body holds the loop as surely as a stalled connection.
   */
  async send(url, { method = "GET", headers = {}, payload = undefined, timeout, forceRefresh, loop = false, outlivesStop = false, stale = null }) {
    // Tied to everything that may end it before anything is awaited: a stop or a
    // refresh while the token is fetched is not missed.
    const controller = new AbortController();
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), timeout);
    const sources = [controller.signal, deadline.signal];
    if (!outlivesStop) sources.push(this.#stopped);
    const signal = anySignal(sources);
    if (loop) this.#loop = controller;
    try {
      const token = await untilAborted(this.#token(forceRefresh, loop), signal);
      if (loop && stale?.()) throw new DOMException("built on what moved since", "AbortError");
      const allHeaders = { Accept: "application/json", Authorization: `Bearer ${token}`, ...headers };
      if (payload !== undefined) allHeaders["Content-Type"] = "application/json";
      // no-store: the client does its own revalidation; the HTTP cache must not answer
      // a poll or turn our If-None-Match into a 200 from cache.
      const init = { method, headers: allHeaders, signal, cache: "no-store", credentials: "omit" };
      if (payload !== undefined) init.body = JSON.stringify(payload);
      const response = await this.#fetch(url, init);
      const body = await readBody(response);
      return { status: response.status, statusText: response.statusText, headers: response.headers, body };
    } catch (error) {
      if (deadline.signal.aborted) throw new SyncError("timeout", `no complete answer within ${timeout} ms`);
      if (signal.aborted || error?.name === "AbortError") throw new DOMException("stopped or interrupted", "AbortError");
      if (error instanceof SyncError) throw error;
      throw new SyncError("network", String(error?.message ?? error), { cause: error });
    } finally {
      clearTimeout(timer);
      if (this.#loop === controller) this.#loop = null;
    }
  }

  async #token(forceRefresh, loop) {
    let token;
    try {
      token = await this.#getToken({ forceRefresh });
    } catch (error) {
      // The app could not produce a token right now (its own server may be down too):
      // retry with backoff rather than give up.
      throw new SyncError("token", `getToken failed: ${error?.message ?? error}`, { cause: error });
    }
    const subject = tokenSubject(token);
    const previous = this.#user;
    if (subject !== null) this.#user = subject;
    if (previous !== null && subject !== null && subject !== previous) {
      // The app now speaks for someone else (a logout and login, here or in another
      // tab): nothing of the previous user may show or be sent on. A token with no
      // readable subject can only be refused (the server requires `sub`), so it is
      // sent, and ends in `unauthorized` like any stale token.
      this.#onUserChange();
      // The loop's request was built on the previous user's cursor: start over.
      if (loop) throw new SyncError("identity", "the token is for another user: starting over");
    }
    return token;
  }
}

/**
 * A signal that aborts when any of `signals` does (AbortSignal.any, or the same by hand
 * where it is missing); what it adds to the sources goes when it aborts.
 */
export function anySignal(signals) {
  if (typeof AbortSignal.any === "function") return AbortSignal.any(signals);
  const controller = new AbortController();
  const abort = () => {
    for (const signal of signals) signal.removeEventListener("abort", abort);
    controller.abort();
  };
  for (const signal of signals) {
    if (signal.aborted) abort();
    else signal.addEventListener("abort", abort);
  }
  return controller.signal;
}

/** `promise`'s value, unless `signal` aborts first (then an AbortError). */
function untilAborted(promise, signal) {
  if (signal.aborted) return Promise.reject(new DOMException("aborted", "AbortError"));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new DOMException("aborted", "AbortError"));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** The body as JSON; null when empty, undefined when it is not JSON. */
async function readBody(response) {
  if (response.status === 204 || response.status === 304) {
    await discard(response);
    return null;
  }
  const text = await response.text();
  if (text === "") return null;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function discard(response) {
  try {
    await response.body?.cancel();
  } catch {
    // Nothing to clean up.
  }
}
