/**
 * The fetch loop of community-sync.js, run by the leader tab only: wait while there is
 * nothing to do, ask (a snapshot, a catch-up, a long or a smart poll), apply the
 * answer, pace the next request. What each answer or failure means, and every delay,
 * is decided in community-sync-decisions.js; the loop wires those decisions to
 * timers, the requests and the store. Internal: not an entry point of the package.
 */
import {
  LONG_POLL,
  LoopGuard,
  SNAPSHOT,
  STATUS,
  SyncError,
  applyAnswer,
  asSyncError,
  buildPollUrl,
  chooseTransport,
  earlyUnchangedDelay,
  initialTransport,
  interpretResponse,
  isDropped,
  nextRequest,
  recordTransportOutcome,
  retryDelay,
  sameTyping,
  snapshotUrl,
  typingFor,
} from "./community-sync-decisions.js";
import { isolated } from "./community-sync-store.js";

export class Loop {
  #options;
  #requests;
  #stopped;
  #store;
  #watches;
  #optimistic;
  #othersVisible;
  #stepDown;
  #guard;
  #transport = initialTransport();
  #requestNo = 0; // numbers the loop's requests, to tell answers sent after a read
  #failures = 0; // failed requests since the cursor last moved
  #earlyStreak = 0; // long polls answered "unchanged" at once, in a row
  #pollInterval = null;
  #wakeUp = null;
  #request = null; // the request in flight
  // Whether #run is on the stack: a tab that resigns and takes over again before its
  // loop noticed keeps that loop rather than start a second one. The loop's own
  // lifetime, not the client's state.
  #running = false;

  /**
   * `othersVisible()`: whether another tab of the user is looked at; `stepDown(delay)`:
   * let another tab try after `unauthorized`, false when there is none to let.
   */
  constructor({ options, requests, stopped, store, watches, optimistic, othersVisible, stepDown }) {
    this.#options = options;
    this.#requests = requests;
    this.#stopped = stopped;
    this.#store = store;
    this.#watches = watches;
    this.#optimistic = optimistic;
    this.#othersVisible = othersVisible;
    this.#stepDown = stepDown;
    this.#guard = new LoopGuard(options.loopGuard);
  }

  /** The number of the last request, to tell the answers sent after it. */
  get requestNo() {
    return this.#requestNo;
  }

  /** The request in flight, if any. */
  get request() {
    return this.#request;
  }

  /** Run the loop, unless it runs already. */
  start() {
    if (!this.#running) this.#run();
  }

  /** Cut the request in flight and any wait short: the loop looks again whether it leads. */
  halt() {
    this.#requests.interruptLoop();
    this.#wakeUp?.();
  }

  /**
   * Something changed outside the loop (visibility, network, a refresh): cut any wait
   * short and look again. The backoff count stays: only progress resets it, and the
   * loop guard bounds how often wake-ups can turn into requests.
   */
  interrupt(reason) {
    if (!this.#store.isLeader) return;
    if (reason === "reconnect") this.#store.move({ type: "reconnect" });
    const abort = this.#shouldPause() || reason === "offline" || reason === "refresh" || reason === "reconnect";
    if (abort) this.#requests.interruptLoop();
    this.#wakeUp?.();
  }

  async #run() {
    this.#running = true;
    try {
      while (!this.#stopped.aborted && this.#store.isLeader) {
        let delay;
        try {
          delay = await this.#turn();
        } catch (error) {
          // A bug here must not end polling while the page still says "live".
          this.#store.report(asSyncError("internal", error));
          this.#store.move({ type: "failure" });
          delay = this.#retryDelay(null);
        }
        if (!this.#stopped.aborted && this.#store.isLeader && delay > 0) await this.#sleep(delay);
      }
    } finally {
      this.#running = false;
    }
  }

  /** Wait while there is nothing to do, else make one request; returns the next delay. */
  async #turn() {
    if (this.#shouldPause()) {
      this.#store.move({ type: "pause" });
      await this.#sleep(Infinity);
      return 0;
    }
    if (globalThis.navigator?.onLine === false) {
      this.#store.move({ type: "offline" });
      await this.#sleep(Infinity);
      return 0;
    }
    if (this.#store.machine.status === STATUS.ERROR) {
      // Refused for good: nothing is asked until reconnect() or another user's token.
      await this.#sleep(Infinity);
      return 0;
    }
    this.#store.move({ type: "wake" });
    // The guard's pause holds whatever wakes the loop: a wake-up only looks again.
    const held = this.#guard.holdFor(Date.now());
    if (held > 0) return held;
    const { delay, news } = await this.#step();
    if (this.#guard.record(Date.now(), news)) {
      this.#store.report(new SyncError("loop", "too many requests without progress: holding off"));
      this.#store.move({ type: "failure" });
      return Math.max(delay, this.#guard.holdFor(Date.now()));
    }
    return delay;
  }

  /** One request and what it means: `{delay, news}`. */
  async #step() {
    const transport = chooseTransport(this.#transport, Date.now(), this.#options.transport);
    const request = { ...nextRequest(this.#store.machine, this.#store.state.cursor, transport), no: ++this.#requestNo };
    const startedAt = Date.now();
    let outcome;
    this.#request = request;
    try {
      outcome = await this.#exchange(request);
    } catch (error) {
      // Paused, stopped, woken on purpose, or the watches moved: ask again at once.
      if (error?.name === "AbortError") return { delay: 0, news: false };
      if (!(error instanceof SyncError)) throw error;
      if (error.kind === "identity") return { delay: 0, news: false }; // starts over alone
      outcome = { kind: "failure", error, pollInterval: null };
    } finally {
      this.#request = null;
    }
    if (outcome.pollInterval !== null) this.#pollInterval = outcome.pollInterval;
    if (this.#stopped.aborted || !this.#store.isLeader) return { delay: 0, news: false };
    const heldFor = Date.now() - startedAt;
    if (outcome.kind === "answer") return this.#answered(request, outcome, heldFor);
    if (outcome.kind === "refused-watch") return this.#setAside(request, outcome.error);
    this.#store.report(outcome.error);
    if (outcome.kind === "refused") {
      this.#store.move({ type: "refused", error: outcome.error });
      return { delay: 0, news: false };
    }
    if (outcome.kind === "unauthorized") {
      // Refused even with a fresh token: the app may log the user in again. Asked
      // again after the backoff, with a fresh token each time; a tab sharing the
      // user's poll first lets another tab, whose app may hold a valid token, try.
      this.#store.move({ type: "unauthorized" });
      if (this.#options.onUnauthorized) isolated(this.#options.onUnauthorized, outcome.error);
      const delay = this.#retryDelay(outcome.error.retryAfter);
      return this.#stepDown(delay) ? { delay: 0, news: false } : { delay, news: false };
    }
    if (outcome.kind === "rejected") this.#store.forgetCursor();
    else if (isDropped(outcome.error)) {
      this.#transport = recordTransportOutcome(
        this.#transport,
        { transport: request.transport, ok: false, heldFor },
        Date.now(),
        this.#options.transport,
      );
    }
    this.#store.move({ type: "failure", offline: globalThis.navigator?.onLine === false });
    return { delay: this.#retryDelay(outcome.error.retryAfter), news: false };
  }

  /** The server refused a watch the poll carried: poll again at once without it, once known. */
  async #setAside(request, error) {
    if (await this.#watches.setAside(request.watches, error)) return { delay: 0, news: false };
    // Not known yet which one: a failure like any other, asked again after the backoff.
    this.#store.report(error);
    this.#store.move({ type: "failure" });
    return { delay: this.#retryDelay(null), news: false };
  }

  #retryDelay(retryAfter) {
    return retryDelay(this.#failures++, retryAfter, this.#options.backoff);
  }

  #answered(request, { answer, notModified }, heldFor) {
    this.#transport = recordTransportOutcome(this.#transport, { transport: request.transport, ok: true }, Date.now(), this.#options.transport);
    const { progressed, news } = this.#apply(answer, request);
    if (progressed) this.#failures = 0;
    // A 304 confirms the list but carries no cursor; a poll without one answers
    // `reset` at once with a fresh cursor.
    const revalidated = request.conditional === true && notModified === true;
    this.#store.move({ type: "answer", mode: this.#transport.mode, revalidated });
    const early = request.transport === LONG_POLL && answer.status === "unchanged" && heldFor < this.#options.minLongPollGap;
    this.#earlyStreak = early ? this.#earlyStreak + 1 : 0;
    return { delay: this.#delayAfter(request), news };
  }

  #delayAfter(request) {
    if (request.transport === SNAPSHOT || request.catchUp) return 0;
    // A poll that answered without a cursor would be asked again without one.
    if (!this.#store.state.cursor) return this.#options.minLongPollGap;
    if (request.transport === LONG_POLL) {
      // Not held (a draining worker, a server that does not hold): a short gap, growing
      // only while it keeps happening; never the smart-poll interval.
      if (this.#earlyStreak === 0) return 0;
      return earlyUnchangedDelay(this.#earlyStreak, this.#options.minLongPollGap, this.#options.backoff);
    }
    return this.#pollInterval ?? this.#options.smartInterval;
  }

  #apply(answer, request) {
    const communities = Array.isArray(answer.communities) ? answer.communities : null;
    const settled = this.#optimistic.settle(answer.changes ?? [], communities, request.no);
    // A poll's typing lists are whole for the watches it carried: {} when nobody types.
    const typed = request.transport === SNAPSHOT ? answer : { ...answer, typing: typingFor(answer.typing, request.watches ?? []) };
    const before = this.#store.state;
    const applied = applyAnswer(before, this.#optimistic.mask(typed), request.source);
    const { state, update, progressed } = applied;
    this.#watches.retryRefusedOn(update.added);
    this.#store.move({ type: "adopt" });
    this.#store.publish(state, update, { settled });
    // Someone starting or stopping to type is news too: the loop guard must not hold it.
    return { progressed, news: applied.news || !sameTyping(before.typing, state.typing) };
  }

  /** Send one request, refreshing the token once on 401; returns what it means. */
  async #exchange(request) {
    // A tab the server refuses asks with a fresh token from the first try.
    const forced = this.#store.machine.status === STATUS.UNAUTHORIZED;
    let response = await this.#fetchOnce(request, forced);
    if (response.status === 401 && !forced) response = await this.#fetchOnce(request, true);
    return interpretResponse(response, request.transport, Date.now(), request.watches);
  }

  /**
   * One HTTP exchange, read to the end: `{status, statusText, headers, body}`. The
   * timeout covers the body too, since a stalled body holds the loop as surely as a
   * stalled connection.
   */
  async #fetchOnce(request, forceRefresh) {
    const options = this.#options;
    const headers = {};
    let url;
    let timeout;
    // Set when the watches move while the token is fetched: this poll would carry the old ones.
    request.rewatched = false;
    if (request.transport === SNAPSHOT) {
      url = snapshotUrl(options.baseUrl);
      timeout = options.requestTimeout;
      if (request.conditional && this.#store.state.hash) headers["If-None-Match"] = `"${this.#store.state.hash}"`;
    } else {
      const wait = request.transport === LONG_POLL ? options.pollTimeout : 0;
      request.watches = this.#watches.polled();
      const { cursor, hash } = this.#store.state;
      url = buildPollUrl(options.baseUrl, { cursor, hash, timeout: wait, watches: request.watches });
      timeout = request.transport === LONG_POLL ? wait * 1000 + options.pollTimeoutGrace : options.requestTimeout;
    }
    return this.#requests.send(url, { headers, timeout, forceRefresh, loop: true, stale: () => request.rewatched });
  }

  #shouldPause() {
    if (!this.#options.pauseWhenHidden || pageVisible()) return false;
    return !this.#othersVisible();
  }

  /** Wait `ms` (Infinity: until woken). Resolves early on interrupt(), halt() or stop. */
  #sleep(ms) {
    if (this.#stopped.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(done, ms) : null;
      const wakeUp = () => done();
      this.#wakeUp = wakeUp;
      const loop = this;
      function done() {
        clearTimeout(timer);
        if (loop.#wakeUp === wakeUp) loop.#wakeUp = null;
        resolve();
      }
    });
  }
}

/** Whether this page is looked at (no document: a worker, taken as looked at). */
export function pageVisible() {
  const doc = globalThis.document;
  return !doc || doc.visibilityState !== "hidden";
}
