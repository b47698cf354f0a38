/**
 * The decisions of community-sync.js, as pure functions: how long to wait, what
 * changed, which answer is newer, what a response means. The client imports them; the
 * tests import them from here. Not an API: names and shapes may change in any release.
 * No dependencies, no globals, no clocks or randomness except what is passed in.
 */

export const LONG_POLL = "long-poll";
export const SMART_POLL = "smart-poll";
export const SNAPSHOT = "snapshot";

export const DEFAULT_BACKOFF = Object.freeze({
  initialDelay: 500,
  maxDelay: 30_000,
  multiplier: 2,
  // A Retry-After longer than this (a date far ahead, a typo) is not honoured in full:
  // a tab waiting an hour would look dead.
  maxRetryAfter: 300_000,
});

export const DEFAULT_TRANSPORT = Object.freeze({
  // Consecutive failures of held long polls before switching to smart polling.
  fallbackAfter: 3,
  // A failure only counts against long polling when the request had been held this
  // long: a refused connection (server down) says nothing about proxies.
  heldFailureAfter: 1_000,
  // How long to stay on smart polling before trying a long poll again.
  retryLongPollAfter: 180_000,
});

export const DEFAULT_LOOP_GUARD = Object.freeze({
  // More than maxRequests requests that brought nothing new within `window` ms means
  // the pacing failed somewhere: stop asking for `pause` ms.
  maxRequests: 20,
  window: 10_000,
  pause: 60_000,
});

// ---------------------------------------------------------------------------
// The loop's states
// ---------------------------------------------------------------------------

export const STATUS = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  SMART: "smart",
  RECONNECTING: "reconnecting",
  OFFLINE: "offline",
  PAUSED: "paused",
  UNAUTHORIZED: "unauthorized",
  ERROR: "error",
  STOPPED: "stopped",
});

/**
 * A tab's part in the election: it polls for the user's tabs (`leader`), follows the
 * one that does (`follower`), or stepped down after `unauthorized` and stays out of
 * the queue until reconnect() or a live leader (`stepped-down`).
 */
export const ROLE = Object.freeze({
  LEADER: "leader",
  FOLLOWER: "follower",
  STEPPED_DOWN: "stepped-down",
});

/** Where a client starts: nothing asked or held yet, following, and a catch-up owed once it leads. */
export function initialMachine() {
  return { status: STATUS.CONNECTING, catchUp: true, error: null, role: ROLE.FOLLOWER, held: false, revalidated: false };
}

/**
 * The one transition function of the client. `machine` is `{status, catchUp, error,
 * role, held, revalidated}`: the status shown, whether the next poll is a `timeout=0`
 * catch-up (it learns at once what was missed, and can say `live` without waiting out
 * a held poll), the terminal error, if any; the tab's ROLE; whether it holds a state
 * (from an answer or its leader), and whether the last answer was a `304` to a
 * conditional snapshot (see nextRequest). `event.type` is one of:
 *
 * - `lead`: this tab now talks to the server (it took over, or polls alone);
 * - `resign`: another tab does; `step-down`: none of this tab's business until
 *   `queue` (it rejoins the election);
 * - `answer` (`mode`: LONG_POLL or SMART_POLL; `revalidated`): a request was answered;
 * - `adopt`: a state is held, answered or relayed;
 * - `failure` (`offline`: the browser says it is): a request failed, retried later;
 * - `unauthorized` (`error`): `401` even with a fresh token, retried later;
 * - `refused` (`error`): a permanent refusal (see isPermanent): nothing more is asked;
 * - `pause`, `offline`: no visible tab, no network: the loop waits;
 * - `wake`: it may ask again; from `paused` or `offline` through a catch-up;
 * - `reconnect`, `user`: start over (reconnect() or another user's token, which also
 *   drops the state held);
 * - `follow` (`status`): a follower shows what its leader says;
 * - `stop`.
 *
 * `stopped` is final; the status `error` is left only by `reconnect`, `user` or `stop`,
 * while the role and what is held still move. An event that changes nothing returns
 * `machine` itself.
 */
export function transition(machine, event) {
  if (machine.status === STATUS.STOPPED) return machine;
  const next = { ...machine, ...loopAfter(machine, event), ...tabAfter(machine, event) };
  return Object.keys(next).every((key) => next[key] === machine[key]) ? machine : next;
}

/** The status part of transition(): `{status, catchUp, error}`. */
function loopAfter(machine, event) {
  const { status } = machine;
  if (status === STATUS.ERROR && !["reconnect", "user", "stop", "follow"].includes(event.type)) return {};
  switch (event.type) {
    case "stop":
      return { status: STATUS.STOPPED, catchUp: false, error: machine.error };
    case "lead":
      // A tab whose token the server refuses stays unauthorized until an answer.
      return { status: status === STATUS.UNAUTHORIZED ? status : STATUS.CONNECTING, catchUp: true, error: null };
    case "answer":
      return { status: event.mode === LONG_POLL ? STATUS.LIVE : STATUS.SMART, catchUp: false, error: null };
    case "failure":
      return { status: event.offline ? STATUS.OFFLINE : STATUS.RECONNECTING };
    case "unauthorized":
      return { status: STATUS.UNAUTHORIZED };
    case "refused":
      return { status: STATUS.ERROR, catchUp: true, error: event.error };
    case "pause":
      return { status: STATUS.PAUSED, catchUp: true };
    case "offline":
      return { status: STATUS.OFFLINE, catchUp: true };
    case "wake":
      if (status !== STATUS.PAUSED && status !== STATUS.OFFLINE) return {};
      return { status: STATUS.CONNECTING, catchUp: true };
    case "reconnect":
    case "user":
      return { status: STATUS.CONNECTING, catchUp: true, error: null };
    case "follow":
      return Object.values(STATUS).includes(event.status) ? { status: event.status } : {};
    default:
      return {};
  }
}

/** The tab's part of transition(): what moves of `{role, held, revalidated}`. */
function tabAfter(machine, event) {
  switch (event.type) {
    case "lead":
      return { role: ROLE.LEADER };
    case "resign":
    case "stop":
      return { role: ROLE.FOLLOWER };
    case "step-down":
      return { role: ROLE.STEPPED_DOWN };
    case "queue":
      return machine.role === ROLE.STEPPED_DOWN ? { role: ROLE.FOLLOWER } : {};
    case "adopt":
      return { held: true };
    case "answer":
      return { revalidated: event.revalidated === true };
    case "user":
      return { held: false, revalidated: false };
    default:
      return {};
  }
}

/**
 * What the loop asks next, given the machine and the cursor held: a snapshot while
 * nothing is held; a conditional one (against the list's ETag) once the cursor was
 * rejected, unless that was just answered `304` (a poll without a cursor then answers
 * `reset` at once with a fresh one); a `timeout=0` catch-up when owed; else a poll on
 * `transport`, the one chooseTransport picks.
 */
export function nextRequest(machine, cursor, transport) {
  if (!machine.held) return { source: SNAPSHOT, transport: SNAPSHOT };
  if (!cursor && !machine.revalidated) return { source: SNAPSHOT, transport: SNAPSHOT, conditional: true };
  if (machine.catchUp) return { source: SMART_POLL, transport: SMART_POLL, catchUp: true };
  return { source: transport, transport };
}

/**
 * Whether a refusal is permanent: a `4xx` other than `401` (a token: retried with a
 * fresh one), `408` and `429` (retried, paced). Asking again would be refused again.
 */
export function isPermanent(status) {
  return status >= 400 && status < 500 && status !== 401 && status !== 408 && status !== 429;
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

export const ELECTIONS = Object.freeze(["auto", "locks", "heartbeat", "none"]);

export const DEFAULT_OPTIONS = Object.freeze({
  baseUrl: "",
  pollTimeout: 25, // whole seconds a long poll may be held by the server
  pollTimeoutGrace: 10_000, // extra wait before a held poll counts as lost
  requestTimeout: 15_000, // snapshots and smart polls, body included
  smartInterval: 10_000, // used when the server sends no X-Poll-Interval
  minLongPollGap: 1_000, // a long poll answered "unchanged" sooner than this was not held
  pauseWhenHidden: true,
  election: "auto",
  channelKey: null,
  relayTo: null,
  signal: null,
  onError: null,
  onStatus: null,
  onUnauthorized: null,
  fetch: null,
});

const DURATIONS = ["pollTimeout", "pollTimeoutGrace", "requestTimeout", "smartInterval", "minLongPollGap"];
const CALLBACKS = ["getToken", "onError", "onStatus", "onUnauthorized", "fetch"];
const GROUPS = { backoff: DEFAULT_BACKOFF, transport: DEFAULT_TRANSPORT, loopGuard: DEFAULT_LOOP_GUARD };

/**
 * The options of createCommunitySync, defaults filled in and checked: an option given
 * as undefined keeps its default (as if left out, so `{requestTimeout: undefined}` is
 * not a 0 ms timeout); a duration that is not a finite number >= 0, an unknown
 * `election`, a `signal` that is not an AbortSignal or a callback that is not a
 * function throws a TypeError naming the option. `pollTimeout` is rounded down to
 * whole seconds, which is what the server takes.
 */
export function clientOptions(options = {}) {
  if (options === null || typeof options !== "object") throw new TypeError("createCommunitySync needs an options object");
  if (typeof options.getToken !== "function") throw new TypeError("createCommunitySync needs a getToken function");
  const merged = { ...DEFAULT_OPTIONS, ...defined(options) };
  for (const name of DURATIONS) checkDuration(name, merged[name]);
  merged.pollTimeout = Math.floor(merged.pollTimeout);
  for (const name of CALLBACKS) {
    if (merged[name] !== null && typeof merged[name] !== "function") throw new TypeError(`${name} must be a function`);
  }
  if (!ELECTIONS.includes(merged.election)) {
    throw new TypeError(`election must be one of ${ELECTIONS.map((name) => `"${name}"`).join(", ")}, not ${JSON.stringify(merged.election)}`);
  }
  if (merged.signal !== null && Object.prototype.toString.call(merged.signal) !== "[object AbortSignal]") {
    throw new TypeError("signal must be an AbortSignal");
  }
  if (typeof merged.pauseWhenHidden !== "boolean") throw new TypeError("pauseWhenHidden must be true or false");
  for (const [group, defaults] of Object.entries(GROUPS)) {
    const given = merged[group] ?? {};
    if (typeof given !== "object") throw new TypeError(`${group} must be an object`);
    merged[group] = { ...defaults, ...defined(given) };
    for (const name of Object.keys(defaults)) checkDuration(`${group}.${name}`, merged[group][name]);
  }
  return merged;
}

function defined(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}

function checkDuration(name, value) {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`${name} must be a finite number >= 0, not ${String(value)}`);
  }
}

/**
 * A failed request. `kind`: network, timeout, http, token, unauthorized, identity, loop,
 * internal, not-found (a read marker or listing the server does not have for this user),
 * watch (watches of this tab that the polls leave out, named in `watches`), conflict
 * (an edit refused with `412` because the community is no longer at the version it
 * named; `currentEtag` is the version it is at, when the answer said), typing (a
 * typing request that failed), join or leave (a join or leave refused or unanswered,
 * and rolled back).
 */
export class SyncError extends Error {
  constructor(
    kind,
    message,
    { status = null, retryAfter = null, problem = null, watches = null, currentEtag = null, cause = undefined } = {},
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "SyncError";
    this.kind = kind;
    this.status = status;
    this.retryAfter = retryAfter;
    this.problem = problem;
    this.watches = watches;
    this.currentEtag = currentEtag;
  }
}

/** `error` as a SyncError of `kind` (a bug, a failure outside any request), unless it is one. */
export function asSyncError(kind, error) {
  return error instanceof SyncError ? error : new SyncError(kind, String(error?.message ?? error), { cause: error });
}

// ---------------------------------------------------------------------------
// Pacing
// ---------------------------------------------------------------------------

/**
 * Delay after `failures` failures in a row (0 for the first): exponential, capped at
 * maxDelay, with "equal jitter", a random value between half the ceiling and the
 * ceiling. The jitter keeps many tabs that lost the same server from coming back in
 * step; the lower half keeps a run of unlucky draws from turning into a fast loop.
 */
export function backoffDelay(failures, options = {}, random = Math.random) {
  const { initialDelay, maxDelay, multiplier } = { ...DEFAULT_BACKOFF, ...options };
  const ceiling = Math.min(maxDelay, initialDelay * multiplier ** Math.max(0, failures));
  return Math.floor(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * The one pacing rule of every retry: at least the backoff for `failures`, and at
 * least the server's Retry-After (capped at maxRetryAfter) spread over a quarter more,
 * so that tabs told the same instant do not return in the same one. Retry-After: 0 or a
 * date in the past therefore never shortens the backoff. app/watch.py's retry_delay is
 * this rule in Python: change both together.
 */
export function retryDelay(failures, retryAfter = null, options = {}, random = Math.random) {
  const { maxRetryAfter } = { ...DEFAULT_BACKOFF, ...options };
  const backoff = backoffDelay(failures, options, random);
  if (retryAfter == null || !(retryAfter > 0)) return backoff;
  const told = Math.min(retryAfter, maxRetryAfter);
  return Math.max(backoff, Math.floor(told + (random() * told) / 4));
}

/**
 * The gap before re-polling after a long poll answered `unchanged` at once (a worker
 * shutting down, a server that does not hold): `streak` such answers in a row (1 for
 * the first) wait between gap * 2^(streak-1) and twice that, capped at maxDelay. Short
 * at first, so a draining worker costs a second or two, not a smart-poll interval.
 */
export function earlyUnchangedDelay(streak, gap, options = {}, random = Math.random) {
  const { maxDelay } = { ...DEFAULT_BACKOFF, ...options };
  const base = Math.min(maxDelay, gap * 2 ** Math.max(0, streak - 1));
  return Math.floor(Math.min(maxDelay, base * (1 + random())));
}

/**
 * The last line of defence against a fast loop: counts requests that brought nothing
 * new and, when more than maxRequests fall within `window`, holds every request for
 * `pause`. `now` is passed in, so it is tested without a clock.
 */
export class LoopGuard {
  constructor(options = {}) {
    this.options = { ...DEFAULT_LOOP_GUARD, ...options };
    this.times = [];
    this.until = 0;
  }

  /** Note one finished request; returns true when this one tripped the guard. */
  record(now, progressed) {
    if (progressed) {
      this.times = [];
      return false;
    }
    const { maxRequests, window, pause } = this.options;
    this.times = this.times.filter((at) => now - at < window);
    this.times.push(now);
    if (this.times.length <= maxRequests || now < this.until) return false;
    this.until = now + pause;
    return true;
  }

  /** How long requests are still held (0: go ahead). */
  holdFor(now) {
    return Math.max(0, this.until - now);
  }
}

// ---------------------------------------------------------------------------
// Reading answers
// ---------------------------------------------------------------------------

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

// A proxy that cuts held requests typically answers 502 or 504; treat those like a
// dropped connection rather than as an answer from the service.
const GATEWAY_STATUSES = new Set([502, 504]);

/** Whether a failure looks like a lost connection (what counts against long polling). */
export function isDropped(error) {
  return error.kind === "network" || error.kind === "timeout" || GATEWAY_STATUSES.has(error.status);
}

/**
 * What one response means. `response` is `{status, statusText, headers, body}` with the
 * body already read (parsed JSON, null when empty, undefined when unreadable). Returns
 * `{kind: "answer", answer, notModified}`, `{kind: "rejected", error}` (a poll the
 * server refused: the cursor or a parameter), `{kind: "refused-watch", error}` (a poll
 * refused for one of the `watches` it carried, see isWatchRefusal), `{kind:
 * "unauthorized", error}`, `{kind: "refused", error}` (refused for good, see
 * isPermanent) or `{kind: "failure", error}` (worth retrying), each with the
 * `pollInterval` the server advised (or null).
 */
export function interpretResponse(response, transport, now = Date.now(), watches = []) {
  const { status, headers, body } = response;
  const pollInterval = parsePollInterval(headers.get("X-Poll-Interval"));
  if (status === 304) return { kind: "answer", answer: { status: "unchanged" }, notModified: true, pollInterval };
  if (status >= 200 && status < 300) {
    if (body === null || typeof body !== "object") {
      const error = new SyncError("http", `HTTP ${status} with an unreadable body`, { status });
      return { kind: "failure", error, pollInterval };
    }
    if (transport !== SNAPSHOT) return { kind: "answer", answer: body, notModified: false, pollInterval };
    const etag = headers.get("ETag");
    const hash = body.hash ?? (etag ? etag.replace(/^W\//, "").replace(/"/g, "") : null);
    return { kind: "answer", answer: { ...body, hash }, notModified: false, pollInterval };
  }
  const { problem, detail } = problemOf(response);
  if (status === 401) {
    return { kind: "unauthorized", error: new SyncError("unauthorized", `unauthorized: ${detail}`, { status, problem }), pollInterval };
  }
  const retryAfter = parseRetryAfter(headers.get("Retry-After"), now);
  if (transport !== SNAPSHOT && isWatchRefusal(response, watches)) {
    const error = new SyncError("watch", `poll refused for its watches: ${detail}`, { status, problem });
    return { kind: "refused-watch", error, pollInterval };
  }
  if (status === 400 && transport !== SNAPSHOT) {
    // The cursor cannot be read (a database rebuilt under another format), or a proxy
    // refuses the request: drop the cursor and start over from the list, paced.
    const error = new SyncError("http", `poll rejected: ${detail}`, { status, retryAfter, problem });
    return { kind: "rejected", error, pollInterval };
  }
  const error = new SyncError("http", `HTTP ${status}: ${detail}`, { status, retryAfter, problem });
  return { kind: isPermanent(status) ? "refused" : "failure", error, pollInterval };
}

function problemOf({ body, statusText }) {
  const problem = body !== null && typeof body === "object" ? body : null;
  return { problem, detail: problem?.detail ?? problem?.title ?? statusText ?? "" };
}

/**
 * What the answer to a call the app asked for (a read marker, a page of notifications)
 * means: the body of a 2xx, else a thrown SyncError. A 404 is `not-found` with
 * `notFound` as its message, since the server answers 404 both for a community the user
 * is not a member of and when it has no such endpoint at all.
 */
export function callResult(response, notFound) {
  const { status, body } = response;
  if (status >= 200 && status < 300) return body ?? null;
  const { problem, detail } = problemOf(response);
  if (status === 401) throw new SyncError("unauthorized", `unauthorized: ${detail}`, { status, problem });
  if (status === 404) throw new SyncError("not-found", notFound, { status, problem });
  const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
  throw new SyncError("http", `HTTP ${status}: ${detail}`, { status, retryAfter, problem });
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

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

/**
 * An empty client state. `notificationsUnread` stays null until a server that counts
 * notifications says otherwise, and `online` (members online per community id) until
 * one that counts presence does. `typing` is who types in the topics the polls watch.
 */
export function initialState() {
  return {
    communities: [],
    cursor: null,
    hash: null,
    user: null,
    serverTime: null,
    notificationsUnread: null,
    online: null,
    typing: {},
  };
}

/**
 * Apply one server answer to the client state. `answer` is a snapshot body, a poll body
 * or `{status: "unchanged"}` for a 304; its `typing`, if any, replaces the held one
 * whole (see typingFor). Returns the next state, the update handed to
 * subscribers, `progressed`: whether the answer moved the cursor (what resets the
 * backoff) and `news`: whether it brought a new list (what the loop guard forgives).
 * The returned cursor and hash are always adopted, even on `unchanged`.
 */
export function applyAnswer(state, answer, source, receivedAt = new Date().toISOString()) {
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
    serverTime: answer.server_time ?? state.serverTime ?? null,
    notificationsUnread: answer.notifications_unread ?? state.notificationsUnread ?? null,
    // Beside the state, not in its hash: every answer carries the counts as they are.
    online: onlineCounts(answer.online) ?? state.online ?? null,
    typing: answer.typing ?? state.typing ?? {},
  };
  const update = {
    communities,
    added,
    removed,
    updated,
    // Passed through whole, types this client does not know included: it acts on none
    // of them (the lists are the state), so a newer server's entries cost nothing.
    changes: answer.changes ?? [],
    notificationsUnread: next.notificationsUnread,
    online: next.online,
    typing: next.typing,
    truncated: answer.truncated === true,
    status,
    source,
    serverTime: answer.server_time ?? null,
    receivedAt,
    relayed: false,
  };
  // Only a cursor that replaces one the client followed is progress: a `reset` after
  // the cursor was dropped is the server starting over, and must not undo the backoff
  // of a cycle that keeps rejecting its own cursors.
  const progressed = state.cursor != null && answer.cursor != null && answer.cursor !== state.cursor;
  const news = (answer.hash != null && answer.hash !== state.hash) || update.changes.length > 0;
  return { state: next, update, progressed, news };
}

/**
 * Whether a state relayed by a leader tab is newer than the one a follower holds.
 * `held` and `incoming` are `{from, seq, serverTime}`: the tab that sent it, that
 * tab's own counter, and the server's clock for the answer. From the same tab the
 * counter decides (servers' clocks may differ by a few ms); from another tab (a new
 * leader, or a late message of an old one) the server's time does.
 */
export function isNewerState(held, incoming) {
  if (!held) return true;
  if (incoming.from === held.from) return incoming.seq > held.seq;
  const before = Date.parse(held.serverTime ?? "");
  const after = Date.parse(incoming.serverTime ?? "");
  if (Number.isNaN(before) || Number.isNaN(after)) return true;
  return after >= before;
}

/**
 * A follower's own update for a state the leader relayed: the diff against the list
 * this tab holds (it may have missed messages, or joined late), the leader's changes
 * and status otherwise.
 */
export function followUpdate(held, state, leaderUpdate = {}) {
  const { added, removed, updated } = diffCommunities(held.communities, state.communities);
  return {
    changes: [],
    status: "current",
    source: SNAPSHOT,
    serverTime: state.serverTime ?? null,
    receivedAt: new Date().toISOString(),
    truncated: false,
    ...leaderUpdate,
    communities: state.communities,
    notificationsUnread: state.notificationsUnread ?? null,
    online: state.online ?? null,
    typing: state.typing ?? {},
    added,
    removed,
    updated,
    relayed: true,
  };
}

// ---------------------------------------------------------------------------
// What a page renders
// ---------------------------------------------------------------------------

/** The snapshot before anything is known, and on a framework's server side: one object. */
export const EMPTY_SNAPSHOT = Object.freeze({
  communities: Object.freeze([]),
  unread: Object.freeze({}),
  notifications: null,
  online: null,
  status: "connecting",
});

/**
 * What a page renders, as getSnapshot() gives it: `{communities, unread (community id
 * -> unread count), notifications (unread notifications, or null), online, status}`.
 * Returns `held` itself when nothing in it changed, and keeps the identity of each part
 * that did not change, so a store that compares by identity re-renders only on news.
 */
export function nextSnapshot(held, { communities, notificationsUnread, online, status }) {
  const list = sameList(held.communities, communities) ? held.communities : Object.freeze([...communities]);
  const unread = Object.fromEntries(list.filter((c) => typeof c.unread === "number").map((c) => [c.id, c.unread]));
  const next = {
    communities: list,
    unread: sameRecord(held.unread, unread) ? held.unread : Object.freeze(unread),
    notifications: notificationsUnread ?? null,
    online: sameOnline(held.online, online ?? null) ? held.online : Object.freeze({ ...online }),
    status,
  };
  const same = Object.keys(next).every((key) => next[key] === held[key]);
  return same ? held : Object.freeze(next);
}

function sameList(a, b) {
  return a.length === b.length && a.every((entry, at) => entry === b[at] || sameFields(entry, b[at]));
}

function sameOnline(a, b) {
  return a === null || b === null ? a === b : sameRecord(a, b);
}

function sameRecord(a, b) {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key]);
}

// ---------------------------------------------------------------------------
// Read markers
// ---------------------------------------------------------------------------

/** The key of the notifications read marker among pending reads. */
export const NOTIFICATIONS = "notifications";

/** The key of a read marker: a community's, or (no id) the notifications'. */
export function readKey(communityId = null) {
  return communityId == null ? NOTIFICATIONS : `community:${communityId}`;
}

function isReadOf(change, key) {
  return change?.type === "read" && readKey(change.community_id ?? null) === key;
}

/**
 * The state with one read marker moved to now: that community's `unread` (or
 * `notificationsUnread`) becomes 0, and `entry`, the server's fresh community entry,
 * if given, replaces the held one. A count the server never sent stays absent.
 * Returns `state` itself when nothing changes.
 */
export function applyRead(state, key, entry = null) {
  if (key === NOTIFICATIONS) {
    if (state.notificationsUnread == null || state.notificationsUnread === 0) return state;
    return { ...state, notificationsUnread: 0 };
  }
  let changed = false;
  const communities = state.communities.map((community) => {
    if (readKey(community.id) !== key) return community;
    const next = { ...community, ...entry };
    if (typeof next.unread === "number") next.unread = 0;
    if (sameFields(community, next)) return community;
    changed = true;
    return next;
  });
  return changed ? { ...state, communities } : state;
}

/**
 * A server answer with the pending read markers applied, so an answer that was already
 * on its way when the user read a community does not bring its old count back.
 */
export function maskReads(answer, pending) {
  if (pending.size === 0) return answer;
  const masked = { ...answer };
  if (pending.has(NOTIFICATIONS) && typeof answer.notifications_unread === "number") masked.notifications_unread = 0;
  if (Array.isArray(answer.communities)) {
    masked.communities = answer.communities.map((c) =>
      pending.has(readKey(c.id)) && typeof c.unread === "number" && c.unread !== 0 ? { ...c, unread: 0 } : c,
    );
  }
  return masked;
}

/**
 * The read markers still pending after an answer to request number `requestNo`.
 * `pending` maps a key to `{after, since}`: `after` is the number of the last request
 * sent before the server confirmed the marker (Infinity while the PUT is in flight),
 * `since` when it was asked for. A marker is settled by an answer that carries its
 * `read` change or answers a later request (the server's count then includes the
 * read), or, still in flight after `maxAge` ms, given up: the tab that sent the PUT
 * may have closed, and the server's count is the truth.
 */
export function settleReads(pending, { changes = [], requestNo, now, maxAge }) {
  const left = new Map();
  for (const [key, mark] of pending) {
    if (changes.some((change) => isReadOf(change, key))) continue;
    if (requestNo > mark.after) continue;
    if (mark.after === Infinity && now - mark.since > maxAge) continue;
    left.set(key, mark);
  }
  return left;
}

/** The update subscribers get for a read applied before the server confirmed it. */
export function localReadUpdate(held, state, receivedAt = new Date().toISOString()) {
  return {
    ...followUpdate(held, state, { status: "read", source: "local", receivedAt }),
    relayed: false,
  };
}

/**
 * One page of `GET /me/notifications`: `{notifications, nextCursor, body}`, the
 * entries newest first and the cursor of the next (older) page, null on the last one.
 */
export function notificationsPage(body) {
  const page = body !== null && typeof body === "object" ? body : {};
  return {
    notifications: Array.isArray(page.notifications) ? page.notifications : [],
    nextCursor: page.next_cursor ?? page.cursor ?? null,
    body: page,
  };
}

/** The URL of one page of notifications. */
export function notificationsUrl(baseUrl, { cursor = null, limit = null } = {}) {
  const params = new URLSearchParams();
  if (cursor) params.set("cursor", cursor);
  if (limit != null) params.set("limit", String(limit));
  const query = String(params);
  return `${trimSlash(baseUrl)}/me/notifications${query ? `?${query}` : ""}`;
}

// ---------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------

/** `online` from an answer: `{communityId: count}` with whole counts only, or null. */
export function onlineCounts(value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
  const counts = {};
  for (const [id, count] of Object.entries(value)) {
    if (Number.isInteger(count) && count >= 0) counts[id] = count;
  }
  return counts;
}

/** The URL of a community's presence list. */
export function presenceUrl(baseUrl, communityId, topic) {
  const url = `${trimSlash(baseUrl)}/communities/${encodeURIComponent(communityId)}/presence`;
  return topic == null ? url : `${url}?topic=${encodeURIComponent(topic)}`;
}

/**
 * A presence answer as the app uses it: `{online, users, truncated}`; `users` are
 * `{id, name, since}`, longest online first.
 */
export function presenceList(body) {
  const list = body !== null && typeof body === "object" ? body : {};
  const users = Array.isArray(list.users) ? list.users : [];
  return {
    online: Number.isInteger(list.online) ? list.online : users.length,
    users,
    truncated: list.truncated === true,
  };
}

/** A label for an online count: "3 online", "" for none. */
export function onlineLabel(count) {
  return count > 0 ? `${count} online` : "";
}

/** A badge for an unread count: "3 new", "99+" for the server's cap (100 or more), "" for none. */
export function unreadLabel(count) {
  if (!(count > 0)) return "";
  return count >= 100 ? "99+" : `${count} new`;
}

// ---------------------------------------------------------------------------
// Community edits: conflict-safe with If-Match
// ---------------------------------------------------------------------------

/** Throws a TypeError unless `communityId` is an id the server could have given a community. */
export function checkCommunityId(communityId) {
  if (typeof communityId !== "string" || !COMMUNITY_ID.test(communityId)) {
    const shown = typeof communityId === "string" ? JSON.stringify(communityId) : String(communityId);
    throw new TypeError(`not a community id: ${shown}`);
  }
  return communityId;
}

/** The URL of one community. */
export function communityUrl(baseUrl, communityId) {
  return `${trimSlash(baseUrl)}/communities/${encodeURIComponent(communityId)}`;
}

// RFC 9110 entity-tag, strong: a quoted string of etagc (no space, no inner quote).
const STRONG_ETAG = /^"[\x21\x23-\x7E\x80-\xFF]*"$/;

/**
 * The `If-Match` of an edit: an ETag as the server sent it, quotes included, or `*`
 * (whatever version the community is at). Throws a TypeError for anything else, a weak
 * ETag (`W/"..."`) included: the server compares strongly and never matches one, so the
 * edit could only fail.
 */
export function checkIfMatch(ifMatch) {
  if (ifMatch === "*" || (typeof ifMatch === "string" && STRONG_ETAG.test(ifMatch))) return ifMatch;
  if (ifMatch == null) {
    throw new TypeError(
      "ifMatch is required: the etag getCommunity() resolved with (null when the answer's ETag " +
        'did not reach the page), or "*" for whatever version the community is at',
    );
  }
  if (typeof ifMatch === "string" && /^W\//.test(ifMatch)) {
    throw new TypeError(
      `ifMatch ${ifMatch} is a weak ETag: the server never matches one (something between it ` +
        "and the page weakened the ETag it sent)",
    );
  }
  const shown = typeof ifMatch === "string" ? JSON.stringify(ifMatch) : String(ifMatch);
  throw new TypeError(`ifMatch must be an ETag as the server sent it, quotes included, or "*": not ${shown}`);
}

/**
 * The request that changes `fields` of a community only while it is at the version
 * `ifMatch` names: `{method: "PATCH", url, headers: {"If-Match"}, payload}`. `fields`
 * go as given (the server checks them, and refuses names it does not know). Throws a
 * TypeError for a malformed id, fields that are not an object, or a missing or
 * malformed `ifMatch` (see checkIfMatch).
 */
export function communityUpdateRequest(baseUrl, communityId, fields, options = {}) {
  checkCommunityId(communityId);
  if (fields === null || typeof fields !== "object" || Array.isArray(fields)) {
    throw new TypeError("fields must be an object of the community's fields to change");
  }
  const ifMatch = checkIfMatch((options ?? {}).ifMatch);
  return {
    method: "PATCH",
    url: communityUrl(baseUrl, communityId),
    headers: { "If-Match": ifMatch },
    payload: { ...fields },
  };
}

/**
 * What the answer to a read or an edit of a community means: `{community, etag}` for a
 * 2xx, `etag` being its `ETag` (null when the answer carries none, or the page may not
 * read it), else a thrown SyncError. A `412` is `conflict`: the community is no longer
 * at the version `ifMatch` named, nothing changed, and `currentEtag` is the version it
 * is at. Any other refusal as for the app's other calls (callResult).
 */
export function communityResult(response, { communityId, ifMatch = null } = {}) {
  const { status, body, headers } = response;
  const etag = headers.get("ETag") || null;
  if (status >= 200 && status < 300) {
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      throw new SyncError("http", `HTTP ${status} with an unreadable body: read community ${communityId} again`, {
        status,
      });
    }
    return { community: body, etag };
  }
  if (status === 412) {
    const { problem } = problemOf(response);
    const since = ifMatch ? ` since ${ifMatch}` : "";
    const now = etag ? ` (now ${etag})` : "";
    const message = `community ${communityId} changed${since}${now}: nothing was changed; read it again and decide`;
    throw new SyncError("conflict", message, { status, problem, currentEtag: etag });
  }
  return callResult(response, `no community ${communityId} for this user`);
}

// ---------------------------------------------------------------------------
// Watches: topics below a community
// ---------------------------------------------------------------------------

/** The most watches one poll may carry: the server refuses more with a 400. */
export const MAX_WATCHES = 20;

// The server's rules, so that a watch it would refuse never leaves the browser: a
// community id as app/auth.py's ID_PATTERN has it, a topic as the contract does.
const COMMUNITY_ID = /^(?!\.\.?$)[A-Za-z0-9._~:@|+=-]{1,64}$/;
const TOPIC = /^[a-z][a-z0-9_.:-]{0,63}$/;
const ANY_TOPIC = "*";

/**
 * `{community, topic}` of a well-formed watch, `"<community_id>/<topic>"` or
 * `"<community_id>/*"` (topic `"*"`: every topic of the community), else null.
 */
export function parseWatch(watch) {
  if (typeof watch !== "string") return null;
  const slash = watch.indexOf("/");
  if (slash < 0) return null;
  const community = watch.slice(0, slash);
  const topic = watch.slice(slash + 1);
  if (!COMMUNITY_ID.test(community)) return null;
  if (topic !== ANY_TOPIC && !TOPIC.test(topic)) return null;
  return { community, topic };
}

/**
 * The watches one call declares, in order and without repeats. Throws a TypeError
 * naming the first malformed one, or saying how many there are when more than
 * MAX_WATCHES: no poll could carry them all.
 */
export function checkWatches(watches) {
  if (watches == null || typeof watches === "string" || typeof watches[Symbol.iterator] !== "function") {
    throw new TypeError('watches must be a list of "<community_id>/<topic>" strings');
  }
  const list = [];
  for (const watch of watches) {
    if (parseWatch(watch) === null) {
      const shown = typeof watch === "string" ? JSON.stringify(watch) : String(watch);
      throw new TypeError(
        `not a watch: ${shown} (expected "<community_id>/<topic>" or "<community_id>/*", ` +
          "the topic 1-64 of [a-z0-9_.:-] starting with a letter)",
      );
    }
    if (!list.includes(watch)) list.push(watch);
  }
  if (list.length > MAX_WATCHES) throw new TypeError(`${list.length} watches: a poll carries at most ${MAX_WATCHES}`);
  return list;
}

/** Whether a change belongs to a topic: such changes reach only the watches that cover it. */
export function isTopicChange(change) {
  return typeof change?.topic === "string";
}

/** Whether `watch` covers `topic` of `communityId` (a wildcard covers every topic, `"*"` included). */
export function watchCovers(watch, communityId, topic) {
  return watch === `${communityId}/${topic}` || watch === `${communityId}/${ANY_TOPIC}`;
}

/** Whether any of `watches` covers a topic change. */
export function watchesCover(watches, change) {
  return watches.some((watch) => watchCovers(watch, change.community_id, change.topic));
}

/**
 * `update` as a subscription that declared `watches` receives it: every change that
 * belongs to no topic, the topic changes its own watches cover, and the typing lists of
 * its watches' topics. The same object when nothing is left out.
 */
export function updateForWatches(update, watches) {
  const changes = update.changes.filter((change) => !isTopicChange(change) || watchesCover(watches, change));
  const typing = update.typing === undefined ? undefined : typingFor(update.typing, watches);
  const sameChanges = changes.length === update.changes.length;
  if (sameChanges && (typing === undefined || Object.keys(typing).length === Object.keys(update.typing).length)) return update;
  return { ...update, changes, ...(typing === undefined ? {} : { typing }) };
}

/**
 * The watches one poll carries for all of `lists` (every tab's, the leader's own
 * first): without repeats, at most `limit`, the first ones winning. A community that
 * some list watches whole (`"c-1/*"`) is watched whole, and only once, at the place of
 * its first watch: the wildcard covers its other watches, and needs one place for all.
 */
export function watchUnion(lists, limit = MAX_WATCHES) {
  const watches = lists.flat().map(parseWatch).filter((parsed) => parsed !== null);
  const whole = new Set(watches.filter(({ topic }) => topic === ANY_TOPIC).map(({ community }) => community));
  const union = [];
  for (const { community, topic } of watches) {
    const watch = `${community}/${whole.has(community) ? ANY_TOPIC : topic}`;
    if (!union.includes(watch)) union.push(watch);
  }
  return union.slice(0, limit);
}

/** The watches of `declared` that the watches of `polled` do not cover, in order. */
export function uncoveredWatches(declared, polled) {
  return declared.filter((watch) => {
    const parsed = parseWatch(watch);
    return parsed === null || !polled.some((held) => watchCovers(held, parsed.community, parsed.topic));
  });
}

/** Whether two lists without repeats hold the same watches, in any order. */
export function sameWatches(a = [], b = []) {
  if (a.length !== b.length) return false;
  const held = new Set(a);
  return b.every((watch) => held.has(watch));
}

/** The communities `watches` name, each once, in order. */
export function watchedCommunities(watches) {
  return [...new Set(watches.map((watch) => parseWatch(watch)?.community).filter((id) => id != null))];
}

/**
 * Whether the server refused a poll because of a watch it carried: a 404 (an unknown
 * community, or a private one the user is not in; the poll endpoint itself exists),
 * or a 400 whose problem type is `invalid-watch`. Any other 400 is about the cursor.
 */
export function isWatchRefusal(response, watches) {
  if (!watches?.length) return false;
  if (response.status === 404) return true;
  const type = problemOf(response).problem?.type;
  return response.status === 400 && typeof type === "string" && /(?:^|[:/])invalid-watch$/.test(type);
}

/**
 * The watches of `declared` (every tab's) to set aside after the server refused a poll
 * that carried `sent`: those on `unknown`, the communities the server says it does not
 * have for this user, or, when that names none of them, all that `sent` covers, since
 * polling must go on without whatever the server refuses.
 */
export function refusedWatches(sent, unknown, declared = sent) {
  const named = watchesOn(declared, unknown);
  if (named.length > 0) return named;
  const uncovered = new Set(uncoveredWatches(declared, sent));
  return declared.filter((watch) => !uncovered.has(watch));
}

/** The watches of `watches` on the communities `communityIds`. */
export function watchesOn(watches, communityIds) {
  const ids = new Set(communityIds);
  return watches.filter((watch) => ids.has(parseWatch(watch)?.community));
}

// ---------------------------------------------------------------------------
// Transport and addresses
// ---------------------------------------------------------------------------

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

/** The poll URL for a cursor and hash (both optional), a timeout in seconds and the watches. */
export function buildPollUrl(baseUrl, { cursor, hash, timeout, watches = [] }) {
  const params = new URLSearchParams();
  if (cursor) params.set("cursor", cursor);
  if (hash) params.set("hash", hash);
  params.set("timeout", String(timeout));
  for (const watch of watches) params.append("watch", watch);
  return `${trimSlash(baseUrl)}/community-changes/poll?${params}`;
}

export function snapshotUrl(baseUrl) {
  return `${trimSlash(baseUrl)}/me/communities`;
}

export function trimSlash(url) {
  return String(url ?? "").replace(/\/+$/, "");
}

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

/**
 * The `sub` claim of a JWT, read without verifying it (the server verifies). Used only
 * to keep different users' tabs on different channels; null when the token is not a
 * JWT with a string `sub`.
 */
export function tokenSubject(token) {
  try {
    const part = String(token).split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const sub = JSON.parse(atob(padded)).sub;
    return typeof sub === "string" && sub !== "" ? sub : null;
  } catch {
    return null;
  }
}

/**
 * The name of the lock and channel shared by one user's tabs, or null when there is no
 * identity to key it by: then the tab must poll alone, since a shared fallback name
 * would let one user's leader feed another user's tabs.
 */
export function channelName(apiUrl, identity) {
  if (identity == null || identity === "") return null;
  return `community-sync:${trimSlash(apiUrl)}|${identity}`;
}

// ---------------------------------------------------------------------------
// Typing: who is writing in a topic
// ---------------------------------------------------------------------------

/** At most one `PUT /me/typing` per this many ms: the server ignores more. */
export const TYPING_INTERVAL = 1_000;
/** No typing() call for this long means the user stopped: `DELETE /me/typing`. */
export const TYPING_IDLE = 3_000;

/**
 * Where the user types: `{communityId, topic, key}` (`key` is `"<community_id>/<topic>"`,
 * the key of the poll answers' `typing`), or null when either is malformed. A topic is
 * one topic, never `"*"`.
 */
export function typingPlace(communityId, topic) {
  const parsed = typeof communityId === "string" && typeof topic === "string" ? parseWatch(`${communityId}/${topic}`) : null;
  if (parsed === null || parsed.topic === ANY_TOPIC || parsed.community !== communityId) return null;
  return { communityId, topic, key: `${communityId}/${topic}` };
}

/** How long a PUT must wait after the last one went at `lastPut` (0: it may go now). */
export function typingDelay(lastPut, now, interval = TYPING_INTERVAL) {
  return Math.max(0, lastPut + interval - now);
}

export function typingUrl(baseUrl) {
  return `${trimSlash(baseUrl)}/me/typing`;
}

/**
 * The typing lists of `typing` (a poll answer's `{"<community_id>/<topic>": [{id,
 * name}]}`) that `watches` cover, a wildcard covering every topic of its community:
 * a new object, without malformed keys or lists, `{}` for anything that is not a map.
 */
export function typingFor(typing, watches = []) {
  const lists = {};
  if (typing === null || typeof typing !== "object" || Array.isArray(typing)) return lists;
  for (const [key, users] of Object.entries(typing)) {
    const place = parseWatch(key);
    if (place === null || place.topic === ANY_TOPIC || !Array.isArray(users) || users.length === 0) continue;
    if (watches.some((watch) => watchCovers(watch, place.community, place.topic))) lists[key] = users;
  }
  return lists;
}

/** Whether two typing maps name the same users (by id and name, in order) under the same keys. */
export function sameTyping(a = {}, b = {}) {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => {
    const before = a[key];
    const after = b[key];
    if (!Array.isArray(after) || before.length !== after.length) return false;
    return before.every((user, at) => user?.id === after[at]?.id && (user?.name ?? null) === (after[at]?.name ?? null));
  });
}

// ---------------------------------------------------------------------------
// Memberships: optimistic join and leave
// ---------------------------------------------------------------------------

/** The URL of the user's own membership of a community. */
export function membershipUrl(baseUrl, communityId) {
  return `${communityUrl(baseUrl, communityId)}/members/me`;
}

/**
 * The entry a join shows before the server lists the community: shaped like the
 * server's, with what is known (`known`: the community's `name`, `slug`, `logo_url`,
 * `is_public`, from a public list for example; the id stands in for a missing name and
 * slug), `role: "member"`, `unread: 0` and `pending: true`. Self-join is for public
 * communities only, so `is_public` defaults to true.
 */
export function joinEntry(communityId, known = {}) {
  const { name, slug, logo_url: logoUrl, is_public: isPublic } = known ?? {};
  return {
    id: communityId,
    slug: typeof slug === "string" ? slug : communityId,
    name: typeof name === "string" ? name : communityId,
    logo_url: typeof logoUrl === "string" ? logoUrl : null,
    is_public: typeof isPublic === "boolean" ? isPublic : true,
    role: "member",
    joined_at: null,
    unread: 0,
    pending: true,
  };
}

/**
 * The community list as the user sees it while joins and leaves are pending: `ops`
 * are `{communityId, kind: "join" | "leave", entry}`. A join adds its `entry` at the
 * end unless the list already has the community (the server's entry wins); a leave
 * takes the community out. Returns `communities` itself when nothing changes, so
 * applying the same ops again (to a list they were applied to) changes nothing.
 */
export function overlayMemberships(communities, ops) {
  let list = communities;
  for (const op of ops) {
    const listed = list.some((community) => community.id === op.communityId);
    if (op.kind === "join" && !listed) list = [...list, op.entry];
    else if (op.kind === "leave" && listed) list = list.filter((community) => community.id !== op.communityId);
  }
  return list;
}

/**
 * The pending joins and leaves left after the server's answer to request number
 * `requestNo`. `ops` maps a community id to `{key, kind, after, since, ...}`: `after`
 * is the number of the last request sent before the server answered the join or leave
 * (Infinity while it is in flight), `since` when it was asked for. An op is settled
 * when the answer's list (`communities`, null for an answer without one) shows it (the
 * community listed after a join, absent after a leave), when the answer is to a later
 * request (the server's list is then the truth, whatever it says), or, still in
 * flight after `maxAge` ms, given up: the tab that asked may have closed. Returns
 * `{left, settled}`: the ops left, and the keys of those settled.
 */
export function settleMemberships(ops, { communities = null, requestNo, now, maxAge }) {
  const left = new Map();
  const settled = [];
  const listed = communities === null ? null : new Set(communities.map((community) => community.id));
  for (const [communityId, op] of ops) {
    const shown = listed !== null && listed.has(communityId) === (op.kind === "join");
    const answered = requestNo > op.after;
    const abandoned = op.after === Infinity && now - op.since > maxAge;
    if (shown || answered || abandoned) settled.push(op.key);
    else left.set(communityId, op);
  }
  return { left, settled };
}

/**
 * A join or leave the server refused, or that got no answer: a SyncError of kind
 * `join` or `leave` carrying the failure's status, problem and Retry-After, the
 * failure itself as `cause`.
 */
export function membershipError(kind, communityId, error) {
  return wrappedError(kind, `could not ${kind} community ${communityId}: ${error?.message ?? error}`, error);
}

/**
 * Whether a failed typing request says the place itself is refused (an unknown
 * community, one the user is not in, a malformed topic): repeating it can only fail
 * the same way. Throttling, timeouts and the server's own failures are not.
 */
export function typingRefused(error) {
  const status = error?.status;
  return Number.isInteger(status) && status >= 400 && status < 500 && status !== 401 && status !== 408 && status !== 429;
}

/** A failed typing request as the app hears of it: kind `typing`, the failure as `cause`. */
export function typingError(method, place, error) {
  const where = place === null ? "" : ` in ${place.key}`;
  const what = method === "PUT" ? `saying the user types${where}` : "saying the user stopped typing";
  return wrappedError("typing", `${what} failed: ${error?.message ?? error}`, error);
}

function wrappedError(kind, message, error) {
  return new SyncError(kind, message, {
    status: error?.status ?? null,
    retryAfter: error?.retryAfter ?? null,
    problem: error?.problem ?? null,
    cause: error,
  });
}
