/**
 * community-sync browser client: keeps a user's community list live over plain HTTP.
 *
 *   import { createCommunitySync } from "/static/community-sync.js";
 *   const sync = createCommunitySync({ getToken: async () => token });
 *   const unsubscribe = sync.subscribe(({ communities, added, removed }) => render(communities));
 *   sync.stop();
 *
 * One tab per browser profile (the leader) talks to the server; the other tabs follow
 * over a BroadcastChannel. The decisions the fetch loop makes (delays, diffs, header
 * parsing, long poll or smart poll) are the small exported functions at the top, so
 * they can be tested without a browser. No dependencies, no globals.
 */

export const STATUS = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  SMART: "smart",
  RECONNECTING: "reconnecting",
  OFFLINE: "offline",
  PAUSED: "paused",
  UNAUTHORIZED: "unauthorized",
  STOPPED: "stopped",
});

export const LONG_POLL = "long-poll";
export const SMART_POLL = "smart-poll";
export const SNAPSHOT = "snapshot";

/** Message tag of updates relayed from an iframe to its parent with postMessage. */
export const RELAY_UPDATE = "community-sync:update";
export const RELAY_STATUS = "community-sync:status";

export const DEFAULT_BACKOFF = Object.freeze({ initialDelay: 500, maxDelay: 30_000, multiplier: 2 });

export const DEFAULT_TRANSPORT = Object.freeze({
  // Consecutive failures of held long polls before switching to smart polling.
  fallbackAfter: 3,
  // A failure only counts against long polling when the request had been held this
  // long: a refused connection (server down) says nothing about proxies.
  heldFailureAfter: 1_000,
  // How long to stay on smart polling before trying a long poll again.
  retryLongPollAfter: 180_000,
});

// ---------------------------------------------------------------------------
// Pure decisions
// ---------------------------------------------------------------------------

/**
 * Delay before retry number `attempt` (0 for the first retry): exponential backoff
 * with full jitter, a random value between 0 and min(maxDelay, initial * multiplier^n).
 * Full jitter keeps many tabs that lost the same server from coming back in step.
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const { initialDelay, maxDelay, multiplier } = { ...DEFAULT_BACKOFF, ...options };
  const ceiling = Math.min(maxDelay, initialDelay * multiplier ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

/**
 * `Retry-After` in milliseconds from now: delay-seconds or an HTTP date (RFC 9110).
 * Returns null when the header is absent or unreadable; a date in the past gives 0.
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null) return null;
  const text = String(value).trim();
  if (text === "") return null;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // Only accept what looks like an HTTP date; Date.parse is lenient about junk.
  if (!/^[A-Za-z]{3},? /.test(text)) return null;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - now);
}

/** `X-Poll-Interval` (whole or decimal seconds) in milliseconds, or null. */
export function parsePollInterval(value) {
  if (value == null) return null;
  const text = String(value).trim();
  if (!/^\d+(\.\d+)?$/.test(text)) return null;
  return Math.round(Number(text) * 1000);
}

/**
 * What changed between two community lists, matched by id. `added` and `updated` hold
 * entries of `next`, `removed` holds entries of `previous`. Order follows the lists.
 */
export function diffCommunities(previous = [], next = []) {
  const before = new Map(previous.map((c) => [c.id, c]));
  const after = new Map(next.map((c) => [c.id, c]));
  const added = next.filter((c) => !before.has(c.id));
  const removed = previous.filter((c) => !after.has(c.id));
  const updated = next.filter((c) => before.has(c.id) && !sameFields(before.get(c.id), c));
  return { added, removed, updated };
}

function sameFields(a, b) {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) if (a[key] !== b[key]) return false;
  return true;
}

/** A fresh transport state: start on long polling. */
export function initialTransport() {
  return { mode: LONG_POLL, failures: 0, smartSince: null };
}

/**
 * Which request to make next while following a cursor: a held long poll or a
 * `timeout=0` smart poll. After `retryLongPollAfter` on smart polling a long poll is
 * tried again (a probe); `recordTransportOutcome` decides whether it sticks.
 */
export function chooseTransport(state, now, options = {}) {
  const { retryLongPollAfter } = { ...DEFAULT_TRANSPORT, ...options };
  if (state.mode === LONG_POLL) return LONG_POLL;
  return now - state.smartSince >= retryLongPollAfter ? LONG_POLL : SMART_POLL;
}

/**
 * The transport state after a request. `outcome` is `{transport, ok, heldFor}`:
 * which request it was, whether it got an answer, and how long it was open.
 */
export function recordTransportOutcome(state, outcome, now, options = {}) {
  const { fallbackAfter, heldFailureAfter } = { ...DEFAULT_TRANSPORT, ...options };
  if (outcome.transport !== LONG_POLL) return state;
  if (outcome.ok) return { mode: LONG_POLL, failures: 0, smartSince: null };
  const held = (outcome.heldFor ?? 0) >= heldFailureAfter;
  if (state.mode === SMART_POLL) {
    // A failed probe: stay on smart polling and wait a full period before the next one.
    return held ? { ...state, smartSince: now } : state;
  }
  if (!held) return state;
  const failures = state.failures + 1;
  if (failures >= fallbackAfter) return { mode: SMART_POLL, failures: 0, smartSince: now };
  return { ...state, failures };
}

/** The poll URL for a cursor and hash (both optional) and a timeout in seconds. */
export function buildPollUrl(baseUrl, { cursor, hash, timeout }) {
  const params = new URLSearchParams();
  if (cursor) params.set("cursor", cursor);
  if (hash) params.set("hash", hash);
  params.set("timeout", String(timeout));
  return `${trimSlash(baseUrl)}/community-changes/poll?${params}`;
}

export function snapshotUrl(baseUrl) {
  return `${trimSlash(baseUrl)}/me/communities`;
}

function trimSlash(url) {
  return String(url ?? "").replace(/\/+$/, "");
}

/**
 * Apply one server answer to the client state. `answer` is a snapshot body, a poll body
 * or `{status: "unchanged"}` for a 304. Returns the next state and the update handed to
 * subscribers. The returned cursor and hash are always adopted, even on `unchanged`.
 */
export function applyAnswer(state, answer, source) {
  const status = source === SNAPSHOT && answer.communities ? SNAPSHOT : answer.status;
  const communities = answer.communities ?? state.communities;
  const { added, removed, updated } = answer.communities
    ? diffCommunities(state.communities, answer.communities)
    : { added: [], removed: [], updated: [] };
  const next = {
    communities,
    cursor: answer.cursor ?? state.cursor,
    hash: answer.hash ?? state.hash,
    user: answer.user ?? state.user,
  };
  const update = {
    communities,
    added,
    removed,
    updated,
    changes: answer.changes ?? [],
    status,
    source,
    serverTime: answer.server_time ?? null,
    receivedAt: new Date().toISOString(),
    relayed: false,
  };
  return { state: next, update };
}

/**
 * The `sub` claim of a JWT, read without verifying it (the server verifies). Used only
 * to keep different users' tabs on different channels.
 */
export function tokenSubject(token) {
  try {
    const part = String(token).split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const sub = JSON.parse(atob(padded)).sub;
    return typeof sub === "string" ? sub : null;
  } catch {
    return null;
  }
}

/** True when a postMessage event is a relayed update from an allowed origin. */
export function isAllowedRelayMessage(event, allowedOrigins, types = [RELAY_UPDATE, RELAY_STATUS]) {
  if (!allowedOrigins.includes(event.origin)) return false;
  const data = event.data;
  return data !== null && typeof data === "object" && types.includes(data.type);
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** A failed request. `kind`: network, timeout, http, token (getToken threw), unauthorized. */
export class SyncError extends Error {
  constructor(kind, message, { status = null, retryAfter = null, problem = null } = {}) {
    super(message);
    this.name = "SyncError";
    this.kind = kind;
    this.status = status;
    this.retryAfter = retryAfter;
    this.problem = problem;
  }
}

// A proxy that cuts held requests typically answers 502 or 504; treat those like a
// dropped connection rather than as an answer from the service.
const GATEWAY_STATUSES = new Set([502, 504]);

// ---------------------------------------------------------------------------
// Leader election
// ---------------------------------------------------------------------------

/**
 * Web Locks election. The leader holds the lock by returning a promise that does not
 * settle while the tab lives, so when the tab closes the browser hands the lock to the
 * next queued tab at once. `resign()` settles it (on stop); aborting `signal` leaves
 * the queue.
 */
export function electWithWebLocks(name, { onLeader, onUnavailable, signal }) {
  let resign = () => {};
  const held = new Promise((resolve) => {
    resign = resolve;
  });
  signal.addEventListener("abort", () => resign(), { once: true });
  const denied = (error) => {
    // Cross-site iframes with partitioned or blocked storage get a SecurityError
    // ("The request was denied"): someone else has to decide who leads.
    if (error?.name !== "AbortError" && !signal.aborted) onUnavailable(error);
  };
  try {
    navigator.locks
      .request(name, { signal }, () => {
        if (signal.aborted) return undefined;
        onLeader();
        return held;
      })
      .catch(denied);
  } catch (error) {
    denied(error);
  }
}

/**
 * Heartbeat election over localStorage, for browsers without Web Locks. The leader
 * writes `{id, expires}` every `interval`; a tab that finds the entry missing or expired
 * claims it, waits a beat and leads only if its claim survived, since two tabs can
 * claim in the same instant. Slower to hand over than a lock (up to `ttl`).
 */
export class HeartbeatElection {
  constructor(name, { tabId, onLeader, onResign, signal, storage = globalThis.localStorage, interval = 1000, ttl = 3000 }) {
    this.key = `${name}:leader`;
    this.tabId = tabId;
    this.onLeader = onLeader;
    this.onResign = onResign;
    this.storage = storage;
    this.interval = interval;
    this.ttl = ttl;
    this.leading = false;
    this.timer = setInterval(() => this.tick(), interval);
    this.release = () => this.resign();
    globalThis.addEventListener?.("pagehide", this.release);
    signal.addEventListener("abort", () => this.resign(), { once: true });
    this.tick();
  }

  read() {
    try {
      return JSON.parse(this.storage.getItem(this.key)) ?? null;
    } catch {
      return null;
    }
  }

  write() {
    this.storage.setItem(this.key, JSON.stringify({ id: this.tabId, expires: Date.now() + this.ttl }));
  }

  tick() {
    if (this.leading) {
      // Browsers throttle timers in hidden tabs; if ours slipped past the ttl another
      // tab may have claimed the entry. Two leaders poll twice, so step down.
      const current = this.read();
      if (current && current.id !== this.tabId && current.expires > Date.now()) {
        this.leading = false;
        this.onResign?.();
        return;
      }
      this.write();
      return;
    }
    const current = this.read();
    if (current && current.id !== this.tabId && current.expires > Date.now()) return;
    this.write();
    setTimeout(() => {
      if (this.timer === null || this.read()?.id !== this.tabId) return;
      this.leading = true;
      this.onLeader();
    }, Math.min(200, this.interval / 2));
  }

  resign() {
    clearInterval(this.timer);
    this.timer = null;
    globalThis.removeEventListener?.("pagehide", this.release);
    if (this.read()?.id === this.tabId) this.storage.removeItem(this.key);
    this.leading = false;
  }
}

function pickElection(preference) {
  const hasLocks = typeof navigator !== "undefined" && typeof navigator.locks?.request === "function";
  const hasChannel = typeof BroadcastChannel === "function";
  if (preference === "none" || !hasChannel) return "none";
  if (preference === "locks") return hasLocks ? "locks" : "none";
  if (preference === "heartbeat") return storageUsable() ? "heartbeat" : "none";
  if (hasLocks) return "locks";
  return storageUsable() ? "heartbeat" : "none";
}

/** localStorage exists and can be written (reading the global itself can throw). */
function storageUsable() {
  try {
    const key = "community-sync:probe";
    globalThis.localStorage.setItem(key, "1");
    globalThis.localStorage.removeItem(key);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

const DEFAULTS = {
  baseUrl: "",
  pollTimeout: 25, // seconds a long poll may be held by the server
  pollTimeoutGrace: 10_000, // extra wait before a held poll counts as lost
  requestTimeout: 15_000, // snapshots and smart polls
  smartInterval: 10_000, // used when the server sends no X-Poll-Interval
  minLongPollGap: 1_000, // never re-poll faster than this after an instant "unchanged"
  pauseWhenHidden: true,
  election: "auto", // "auto" | "locks" | "heartbeat" | "none"
  channelKey: null,
  relayTo: null,
  signal: null,
  onError: null,
  onStatus: null,
  fetch: null,
};

/**
 * Start keeping a user's community list live. Returns
 * `{subscribe, onStatus, stop, refresh, reconnect, status, isLeader, communities}`.
 * See docs/client.md for every option.
 */
export function createCommunitySync(options) {
  return new CommunitySync(options);
}

class CommunitySync {
  #options;
  #backoff;
  #transportOptions;
  #fetch;
  #subscribers = new Set();
  #statusListeners = new Set();
  #status = STATUS.CONNECTING;
  #state = { communities: [], cursor: null, hash: null, user: null };
  #hasState = false;
  #transport = initialTransport();
  #revalidated = false;
  #attempt = 0;
  #pollInterval = null;
  #stopController = new AbortController();
  #requestController = null;
  #wakeUp = null;
  #leader = false;
  #running = false;
  #channel = null;
  #tabId = randomId();
  #followerVisibility = new Map();
  #cleanups = [];

  constructor(options = {}) {
    if (typeof options.getToken !== "function") {
      throw new TypeError("createCommunitySync needs a getToken function");
    }
    if (options.relayTo) checkRelayTarget(options.relayTo);
    this.#options = { ...DEFAULTS, ...options };
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#transportOptions = { ...DEFAULT_TRANSPORT, ...options.transport };
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    if (options.onStatus) this.#statusListeners.add(options.onStatus);
    if (options.signal) {
      if (options.signal.aborted) {
        this.#status = STATUS.STOPPED;
        return;
      }
      options.signal.addEventListener("abort", () => this.stop(), { once: true });
    }
    this.#start();
  }

  /** The current connection status, one of STATUS. */
  get status() {
    return this.#status;
  }

  /** Whether this tab is the one talking to the server. */
  get isLeader() {
    return this.#leader;
  }

  /** The last known community list. */
  get communities() {
    return this.#state.communities;
  }

  /**
   * Call `callback(update)` for every answer: `{communities, added, removed, updated,
   * changes, status, source, relayed, ...}`. If a state is already known the callback
   * gets it at once. Returns a function that unsubscribes.
   */
  subscribe(callback) {
    this.#subscribers.add(callback);
    if (this.#hasState) {
      const { update } = applyAnswer({ communities: [] }, this.#state, SNAPSHOT);
      queueMicrotask(() => this.#subscribers.has(callback) && callback({ ...update, status: "current" }));
    }
    return () => this.#subscribers.delete(callback);
  }

  /** Call `callback(status)` on every status change. Returns an unsubscribe function. */
  onStatus(callback) {
    this.#statusListeners.add(callback);
    return () => this.#statusListeners.delete(callback);
  }

  /** Ask the server now instead of waiting (for example after the app made a change). */
  refresh() {
    if (this.#leader) this.#interrupt("refresh");
    else this.#post({ type: "refresh" });
  }

  /** Start over after `unauthorized` (for example once the app has a new token). */
  reconnect() {
    if (this.#status === STATUS.STOPPED) return;
    this.#attempt = 0;
    if (this.#leader) this.#interrupt("reconnect");
  }

  /** Stop polling, leave the election (another tab takes over) and close the channel. */
  stop() {
    if (this.#stopController.signal.aborted) return;
    this.#stopController.abort();
    this.#requestController?.abort();
    this.#wakeUp?.();
    for (const cleanup of this.#cleanups) cleanup();
    this.#post({ type: "bye", tabId: this.#tabId });
    this.#channel?.close();
    this.#channel = null;
    this.#leader = false;
    this.#setStatus(STATUS.STOPPED);
  }

  // --- setup -------------------------------------------------------------

  async #start() {
    const signal = this.#stopController.signal;
    const election = pickElection(this.#options.election);
    let key = this.#options.channelKey;
    if (election !== "none" && key == null) {
      let token = null;
      try {
        token = await this.#options.getToken({ forceRefresh: false });
      } catch (error) {
        this.#report(error);
      }
      key = `${absoluteUrl(this.#options.baseUrl)}|${tokenSubject(token) ?? "anonymous"}`;
    }
    if (signal.aborted) return;
    this.#listenToPage();
    if (election === "none") {
      this.#becomeLeader();
      return;
    }
    const name = `community-sync:${key}`;
    try {
      this.#channel = new BroadcastChannel(name);
    } catch {
      this.#becomeLeader(); // no way to reach other tabs: poll for this one
      return;
    }
    this.#channel.onmessage = (event) => this.#onChannelMessage(event.data);
    // Ask the leader (if any) for what it knows, so this tab renders at once.
    this.#post({ type: "hello", tabId: this.#tabId, visible: pageVisible() });
    const onLeader = () => this.#becomeLeader();
    const heartbeat = () => {
      if (!storageUsable()) return this.#becomeLeader();
      return new HeartbeatElection(name, { tabId: this.#tabId, onLeader, onResign: () => this.#resign(), signal });
    };
    if (election === "locks") electWithWebLocks(name, { onLeader, onUnavailable: heartbeat, signal });
    else heartbeat();
  }

  #listenToPage() {
    const doc = globalThis.document;
    const win = globalThis.window;
    if (doc?.addEventListener) {
      const onVisibility = () => {
        if (this.#leader) this.#interrupt("visibility");
        else this.#post({ type: "visibility", tabId: this.#tabId, visible: pageVisible() });
      };
      doc.addEventListener("visibilitychange", onVisibility);
      this.#cleanups.push(() => doc.removeEventListener("visibilitychange", onVisibility));
    }
    if (win?.addEventListener) {
      const onOnline = () => {
        this.#attempt = 0;
        this.#interrupt("online");
      };
      const onOffline = () => this.#interrupt("offline");
      const onPageHide = () => this.#post({ type: "bye", tabId: this.#tabId });
      win.addEventListener("online", onOnline);
      win.addEventListener("offline", onOffline);
      win.addEventListener("pagehide", onPageHide);
      this.#cleanups.push(() => {
        win.removeEventListener("online", onOnline);
        win.removeEventListener("offline", onOffline);
        win.removeEventListener("pagehide", onPageHide);
      });
    }
  }

  #becomeLeader() {
    if (this.#stopController.signal.aborted || this.#leader) return;
    this.#leader = true;
    this.#followerVisibility.clear();
    this.#post({ type: "leader", tabId: this.#tabId });
    // Whatever the old leader last said, this tab has no request of its own yet.
    this.#status = null;
    this.#setStatus(STATUS.CONNECTING);
    if (!this.#running) this.#run();
  }

  #resign() {
    this.#leader = false;
    this.#requestController?.abort();
    this.#wakeUp?.();
  }

  // --- the channel between tabs -----------------------------------------

  #post(message) {
    try {
      this.#channel?.postMessage(message);
    } catch {
      // A closed channel (tab going away) has no one left to tell.
    }
  }

  #onChannelMessage(message) {
    if (!message || typeof message !== "object") return;
    switch (message.type) {
      case "update":
        if (this.#leader) return;
        this.#state = message.state;
        this.#hasState = true;
        this.#emit({ ...message.update, relayed: true });
        break;
      case "status":
        if (!this.#leader) this.#setStatus(message.status);
        break;
      case "hello":
        if (!this.#leader) return;
        this.#followerVisibility.set(message.tabId, message.visible);
        if (this.#hasState) this.#post({ type: "state", state: this.#state, status: this.#status });
        else this.#post({ type: "status", status: this.#status });
        this.#interrupt("visibility");
        break;
      case "state":
        if (this.#leader || this.#hasState) return;
        this.#adoptState(message.state);
        this.#setStatus(message.status);
        break;
      case "leader":
        // A new leader took over: tell it whether this tab is being looked at.
        if (!this.#leader) this.#post({ type: "visibility", tabId: this.#tabId, visible: pageVisible() });
        break;
      case "visibility":
        if (!this.#leader) return;
        this.#followerVisibility.set(message.tabId, message.visible);
        this.#interrupt("visibility");
        break;
      case "bye":
        if (this.#leader) this.#followerVisibility.delete(message.tabId);
        break;
      case "refresh":
        if (this.#leader) this.#interrupt("refresh");
        break;
    }
  }

  #adoptState(state) {
    const { update } = applyAnswer(this.#state, state, SNAPSHOT);
    this.#state = state;
    this.#hasState = true;
    this.#emit({ ...update, status: "current", relayed: true });
  }

  // --- the fetch loop (leader only) --------------------------------------

  async #run() {
    this.#running = true;
    const stopped = this.#stopController.signal;
    while (!stopped.aborted && this.#leader) {
      if (this.#shouldPause()) {
        this.#setStatus(STATUS.PAUSED);
        await this.#sleep(Infinity);
        continue;
      }
      if (globalThis.navigator?.onLine === false) {
        this.#setStatus(STATUS.OFFLINE);
        await this.#sleep(Infinity);
        continue;
      }
      if (this.#status === STATUS.UNAUTHORIZED) {
        await this.#sleep(Infinity);
        continue;
      }
      const delay = await this.#step();
      if (!stopped.aborted) await this.#sleep(delay);
    }
    this.#running = false;
  }

  /** One request and what it means; returns how long to wait before the next. */
  async #step() {
    const request = this.#nextRequest();
    const startedAt = Date.now();
    try {
      const answer = await this.#send(request);
      this.#transport = recordTransportOutcome(
        this.#transport,
        { transport: request.transport, ok: true },
        Date.now(),
        this.#transportOptions,
      );
      this.#attempt = 0;
      if (this.#stopController.signal.aborted || !this.#leader) return 0;
      if (answer.answer) this.#apply(answer.answer, request.source);
      if (answer.dropCursor) this.#state = { ...this.#state, cursor: null };
      // A 304 confirms the list but carries no cursor; a poll without one answers
      // `reset` at once with a fresh cursor.
      this.#revalidated = request.conditional === true && answer.notModified === true;
      this.#setStatus(this.#transport.mode === LONG_POLL ? STATUS.LIVE : STATUS.SMART);
      return this.#delayAfter(request, answer, Date.now() - startedAt);
    } catch (error) {
      if (error?.name === "AbortError") return 0; // paused, stopped or woken up on purpose
      const failure = error instanceof SyncError ? error : new SyncError("network", String(error?.message ?? error));
      const heldFor = Date.now() - startedAt;
      const dropped = failure.kind === "network" || failure.kind === "timeout" || GATEWAY_STATUSES.has(failure.status);
      if (this.#stopController.signal.aborted) return 0;
      if (dropped) {
        this.#transport = recordTransportOutcome(
          this.#transport,
          { transport: request.transport, ok: false, heldFor },
          Date.now(),
          this.#transportOptions,
        );
      }
      this.#report(failure);
      if (failure.kind === "unauthorized") {
        this.#setStatus(STATUS.UNAUTHORIZED);
        return 0;
      }
      this.#setStatus(globalThis.navigator?.onLine === false ? STATUS.OFFLINE : STATUS.RECONNECTING);
      const backoff = backoffDelay(this.#attempt++, this.#backoff);
      return failure.retryAfter ?? backoff;
    }
  }

  #nextRequest() {
    if (!this.#hasState) return { source: SNAPSHOT, transport: SNAPSHOT };
    if (!this.#state.cursor && !this.#revalidated) {
      // The cursor was rejected: revalidate the list we have against its ETag.
      return { source: SNAPSHOT, transport: SNAPSHOT, conditional: true };
    }
    const transport = chooseTransport(this.#transport, Date.now(), this.#transportOptions);
    return { source: transport, transport };
  }

  #delayAfter(request, result, elapsed) {
    if (result.dropCursor) return 0;
    if (!this.#state.cursor) return request.transport === SNAPSHOT ? 0 : this.#options.minLongPollGap;
    if (request.transport === LONG_POLL) {
      // A long poll that ended at once with nothing new (a server that does not hold)
      // must not turn into a busy loop.
      const instant = result.answer?.status === "unchanged" && elapsed < this.#options.minLongPollGap;
      return instant ? Math.max(this.#options.minLongPollGap, this.#pollInterval ?? 0) : 0;
    }
    if (request.transport === SNAPSHOT && this.#transport.mode === LONG_POLL) return 0;
    return this.#pollInterval ?? this.#options.smartInterval;
  }

  #apply(answer, source) {
    const { state, update } = applyAnswer(this.#state, answer, source);
    this.#state = state;
    this.#hasState = true;
    this.#post({ type: "update", update, state });
    this.#emit(update);
  }

  /** Send one request, refreshing the token once on 401. */
  async #send(request) {
    let response = await this.#fetchOnce(request, false);
    if (response.status === 401) {
      await discard(response);
      response = await this.#fetchOnce(request, true);
    }
    return this.#read(response, request);
  }

  async #fetchOnce(request, forceRefresh) {
    let token;
    try {
      token = await this.#options.getToken({ forceRefresh });
    } catch (error) {
      // The app could not produce a token right now (its own server may be down too):
      // retry with backoff rather than give up.
      throw new SyncError("token", `getToken failed: ${error?.message ?? error}`);
    }
    const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
    let url;
    let timeout;
    if (request.transport === SNAPSHOT) {
      url = snapshotUrl(this.#options.baseUrl);
      timeout = this.#options.requestTimeout;
      if (request.conditional && this.#state.hash) headers["If-None-Match"] = `"${this.#state.hash}"`;
    } else {
      const wait = request.transport === LONG_POLL ? this.#options.pollTimeout : 0;
      url = buildPollUrl(this.#options.baseUrl, { cursor: this.#state.cursor, hash: this.#state.hash, timeout: wait });
      timeout = request.transport === LONG_POLL ? wait * 1000 + this.#options.pollTimeoutGrace : this.#options.requestTimeout;
    }
    const controller = new AbortController();
    this.#requestController = controller;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeout);
    try {
      // no-store: the client does its own revalidation; the HTTP cache must not answer
      // a poll or turn our If-None-Match into a 200 from cache.
      return await this.#fetch(url, { headers, signal: controller.signal, cache: "no-store", credentials: "omit" });
    } catch (error) {
      if (timedOut) throw new SyncError("timeout", `no answer within ${timeout} ms`);
      if (error?.name === "AbortError") throw error;
      throw new SyncError("network", String(error?.message ?? error));
    } finally {
      clearTimeout(timer);
      if (this.#requestController === controller) this.#requestController = null;
    }
  }

  async #read(response, request) {
    const interval = parsePollInterval(response.headers.get("X-Poll-Interval"));
    if (interval !== null) this.#pollInterval = interval;
    if (response.status === 304) return { answer: { status: "unchanged" }, notModified: true };
    if (response.ok) {
      const body = await response.json();
      if (request.transport === SNAPSHOT) {
        const etag = response.headers.get("ETag");
        const hash = body.hash ?? (etag ? etag.replace(/^W\//, "").replace(/"/g, "") : null);
        return { answer: { ...body, hash } };
      }
      return { answer: body };
    }
    const problem = await readProblem(response);
    const detail = problem?.detail ?? problem?.title ?? response.statusText;
    if (response.status === 400 && request.transport !== SNAPSHOT) {
      // The cursor cannot be read (for example a database was rebuilt under another
      // format): start over from the list, which the server always answers.
      this.#report(new SyncError("http", `poll rejected: ${detail}`, { status: 400, problem }));
      return { dropCursor: true };
    }
    if (response.status === 401) {
      throw new SyncError("unauthorized", `unauthorized: ${detail}`, { status: 401, problem });
    }
    const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
    throw new SyncError("http", `HTTP ${response.status}: ${detail}`, { status: response.status, retryAfter, problem });
  }

  // --- waiting and waking ------------------------------------------------

  #shouldPause() {
    if (!this.#options.pauseWhenHidden || pageVisible()) return false;
    for (const visible of this.#followerVisibility.values()) if (visible) return false;
    return true;
  }

  /** Wait `ms` (Infinity: until woken). Resolves early on #interrupt or stop. */
  #sleep(ms) {
    if (this.#stopController.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(done, ms) : null;
      const wakeUp = () => done();
      this.#wakeUp = wakeUp;
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self.#wakeUp === wakeUp) self.#wakeUp = null;
        resolve();
      }
    });
  }

  /** Something changed outside the loop (visibility, network, a refresh): look again. */
  #interrupt(reason) {
    if (!this.#leader) return;
    const pause = this.#shouldPause();
    const offline = reason === "offline";
    const resuming = this.#status === STATUS.PAUSED || this.#status === STATUS.OFFLINE || this.#status === STATUS.UNAUTHORIZED;
    if (reason === "reconnect" && this.#status === STATUS.UNAUTHORIZED) this.#setStatus(STATUS.CONNECTING);
    if (pause || offline) {
      this.#requestController?.abort();
    } else if (reason === "refresh" || reason === "online" || reason === "reconnect") {
      this.#requestController?.abort();
      this.#attempt = 0;
    } else if (!resuming) {
      return; // still visible somewhere and already running: nothing to do
    }
    this.#wakeUp?.();
  }

  // --- notifying ---------------------------------------------------------

  #emit(update) {
    for (const callback of [...this.#subscribers]) {
      try {
        callback(update);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    this.#relay({ type: RELAY_UPDATE, update });
  }

  #setStatus(status) {
    if (this.#status === status) return;
    if (this.#status === STATUS.STOPPED) return;
    this.#status = status;
    if (this.#leader) this.#post({ type: "status", status });
    for (const callback of [...this.#statusListeners]) {
      try {
        callback(status);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    this.#relay({ type: RELAY_STATUS, status });
  }

  #report(error) {
    const onError = this.#options.onError;
    if (onError) onError(error);
  }

  #relay(message) {
    const relay = this.#options.relayTo;
    if (relay) relay.target.postMessage(message, relay.targetOrigin);
  }
}

function checkRelayTarget(relayTo) {
  if (!relayTo.target || typeof relayTo.target.postMessage !== "function") {
    throw new TypeError("relayTo.target must be a window (for example window.parent)");
  }
  // "*" would hand the user's communities to whatever page framed this one.
  if (!relayTo.targetOrigin || relayTo.targetOrigin === "*") {
    throw new TypeError("relayTo.targetOrigin must be an explicit origin, not '*'");
  }
}

/**
 * Parent side of the iframe relay: call `onUpdate(update, event)` for relayed updates
 * (and `onStatus(status, event)` for statuses) from `allowedOrigins` only. Anything
 * else, from any other origin or without the type tag, is ignored. `source`, when
 * given (an iframe's contentWindow), must also match. Returns a function that stops
 * listening.
 */
export function listenForRelay({ allowedOrigins, onUpdate, onStatus, source = null, target = globalThis.window }) {
  if (!Array.isArray(allowedOrigins) || allowedOrigins.length === 0 || allowedOrigins.includes("*")) {
    throw new TypeError("listenForRelay needs a list of explicit allowedOrigins");
  }
  const onMessage = (event) => {
    if (!isAllowedRelayMessage(event, allowedOrigins)) return;
    if (source && event.source !== source) return;
    if (event.data.type === RELAY_UPDATE) onUpdate?.(event.data.update, event);
    else onStatus?.(event.data.status, event);
  };
  target.addEventListener("message", onMessage);
  return () => target.removeEventListener("message", onMessage);
}

// --- small helpers ---------------------------------------------------------

function pageVisible() {
  const doc = globalThis.document;
  return !doc || doc.visibilityState !== "hidden";
}

function absoluteUrl(baseUrl) {
  const here = globalThis.location?.href;
  try {
    return trimSlash(new URL(baseUrl || "/", here).href);
  } catch {
    return trimSlash(baseUrl);
  }
}

function randomId() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

async function readProblem(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

async function discard(response) {
  try {
    await response.body?.cancel();
  } catch {
    // Nothing to clean up.
  }
}
