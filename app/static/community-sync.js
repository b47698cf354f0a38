/**
 * community-sync browser client: keeps a user's community list live over plain HTTP.
 *
 *   import { createCommunitySync } from "/static/community-sync.js";
 *   const sync = createCommunitySync({ getToken: async () => token });
 *   const unsubscribe = sync.subscribe(({ communities, added, removed }) => render(communities));
 *   await sync.markRead(communityId); // unread 0 here at once, then on the server
 *   const { online, users } = await sync.presence(communityId); // who is here now
 *   const unwatch = sync.watch(["c-1/thread:t-9"], (change) => showActivity(change)); // a topic's activity
 *   const { community, etag } = await sync.getCommunity(communityId); // a version to edit
 *   await sync.updateCommunity(communityId, { name }, { ifMatch: etag }); // a 412 rejects: kind "conflict"
 *   composer.oninput = () => sync.typing("c-1", "thread:t-9"); // at most one PUT a second
 *   sync.onTyping((typing) => showTyping(typing["c-1/thread:t-9"] ?? [])); // who else types
 *   await sync.join("c-go", { name: "Go" }); // listed in every tab at once, rolled back if refused
 *   sync.stop();
 *
 * One tab per user and browser profile (the leader) talks to the server; the other tabs
 * of that user follow over a BroadcastChannel. Every decision the fetch loop makes
 * (delays, diffs, ordering, what a response means) is a pure function in
 * community-sync-decisions.js; the election lives in community-sync-election.js,
 * every request (token, timeout, abort signals) in community-sync-requests.js, and
 * typing and presence in community-sync-calls.js. This module wires them to the loop,
 * timers and the channel. No dependencies, no globals.
 */

import {
  LONG_POLL,
  LoopGuard,
  MAX_WATCHES,
  SMART_POLL,
  EMPTY_SNAPSHOT,
  SNAPSHOT,
  STATUS,
  SyncError,
  applyAnswer,
  applyRead,
  buildPollUrl,
  channelName,
  checkCommunityId,
  checkWatches,
  chooseTransport,
  clientOptions,
  communityResult,
  communityUpdateRequest,
  communityUrl,
  diffCommunities,
  earlyUnchangedDelay,
  followUpdate,
  initialMachine,
  initialState,
  initialTransport,
  interpretResponse,
  isDropped,
  isNewerState,
  isTopicChange,
  joinEntry,
  localReadUpdate,
  maskReads,
  nextSnapshot,
  onlineLabel,
  membershipError,
  membershipUrl,
  notificationsPage,
  notificationsUrl,
  overlayMemberships,
  parseWatch,
  readKey,
  recordTransportOutcome,
  refusedWatches,
  retryDelay,
  sameTyping,
  sameWatches,
  settleMemberships,
  settleReads,
  snapshotUrl,
  tokenSubject,
  transition,
  trimSlash,
  typingFor,
  unreadLabel,
  uncoveredWatches,
  updateForWatches,
  watchUnion,
  watchedCommunities,
  watchesOn,
} from "./community-sync-decisions.js";
import { HeartbeatElection, electWithWebLocks, pickElection } from "./community-sync-election.js";
import { Presence, Typing } from "./community-sync-calls.js";
import { Requests, anySignal } from "./community-sync-requests.js";
import { RELAY_STATUS, RELAY_UPDATE, listenForRelay } from "./community-sync-relay.js";

// listenForRelay now lives in community-sync-relay.js (a parent page needs nothing
// else); it stays importable from here for pages that already do.
export { RELAY_STATUS, RELAY_UPDATE, SyncError, listenForRelay };
// Labels for what getSnapshot() holds: "3 new" ("99+" from 100), "3 online"; and the
// snapshot before anything is known (what a framework's server side renders).
export { EMPTY_SNAPSHOT, onlineLabel, unreadLabel };

export { STATUS };

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

// How long a tab that takes over waits for the other tabs to declare their watches
// again before it forgets those of tabs that did not (closed without saying so).
const WATCH_ROLL_CALL = 3_000;

/**
 * Start keeping a user's community list live. Returns `{subscribe, getSnapshot,
 * onChange, watch, onTyping, onStatus, stop, refresh, reconnect, markRead,
 * markNotificationsRead, notifications, presence, readers, presenceVisible,
 * setPresenceVisible, getCommunity, updateCommunity, typing, stopTyping, join, leave,
 * status, error, isLeader, communities, notificationsUnread, online}`. Throws a
 * TypeError for options that cannot work (see clientOptions). See docs/client.md for
 * every option.
 */
export function createCommunitySync(options) {
  return new CommunitySync(options);
}

class CommunitySync {
  #options;
  #backoff;
  #transportOptions;
  #requests; // every request, with its token, timeout and abort signals
  #guard;
  // {callback, watches}: each subscription receives the topic changes of its own watches.
  #subscribers = new Set();
  #statusListeners = new Set();
  // {status, catchUp, error}: the loop's state, moved only by transition().
  #machine = initialMachine();
  #snapshot = EMPTY_SNAPSHOT; // what getSnapshot() gives, replaced only on a change
  #state = initialState();
  #hasState = false;
  // {from, seq, serverTime} of the state held, to order what leaders relay.
  #heard = null;
  #seq = 0;
  #transport = initialTransport();
  // Read markers moved here (or, while leading, in a follower) that the server has not
  // yet confirmed in an answer: masked to 0 in answers until then. See settleReads.
  #pendingReads = new Map();
  #requestNo = 0; // numbers the loop's requests, to tell answers sent after a read
  #revalidated = false;
  #failures = 0; // failed requests since the cursor last moved
  #earlyStreak = 0; // long polls answered "unchanged" at once, in a row
  #pollInterval = null;
  #stopController = new AbortController();
  #wakeUp = null;
  #leader = false;
  #running = false;
  #channel = null;
  #channelName = null;
  // The token subject the channel is keyed by; every token used while leading must
  // carry it, or this tab leaves the channel.
  #subject = null;
  #election = "none";
  #electionController = null;
  #outOfQueue = false; // stepped down after `unauthorized`; rejoins after the backoff or on reconnect()
  #rejoinTimer = null;
  #tabId = randomId();
  #followerVisibility = new Map();
  #presence; // presence lists, asked conditionally
  // tabId -> {watches, seq} another tab of this user declared. Every tab keeps them, so
  // that one taking over polls them from its first request.
  #otherWatches = new Map();
  #watchSeq = 0; // numbers this tab's declarations, to tell which one the leader heard
  #watchesQueued = false;
  #ownWatchesMoved = false;
  // Tabs that declared their watches since this tab took over; null once the roll call ended.
  #rollCall = null;
  #rollCallTimer = null;
  // While leading: watch -> why the server refused it. Left out of the polls while some
  // tab still declares it, unless the user joins its community.
  #refused = new Map();
  // What the leader polls, as it last said: {polled, refused: Map of watch -> why}.
  #watching = { polled: [], refused: new Map() };
  // Watches of this tab reported as not polled, each reported once until polled again.
  #unpolledReported = new Set();
  #loopRequest = null; // the loop's request in flight
  #rewatched = false; // the watches moved since that request was built
  // communityId -> a join or leave asked for in this browser that no answer has shown
  // yet: {key, communityId, kind, entry, answered, after, since}. Every tab holds the
  // same ones (the tab that asks tells the others) and shows them on top of the
  // server's list, which #state keeps as the server sent it. The leader settles them
  // (see settleMemberships) and tells the others which it settled; a follower settles
  // by itself only those the list it is relayed shows.
  #memberships = new Map();
  #shown = []; // the list subscribers last received, to tell them what changed
  #typingListeners = new Set(); // {callback, watches (null: the tab's), last}
  #typingCalls; // typing(): paced PUTs, a DELETE when it ends
  #cleanups = [];

  constructor(options = {}) {
    options = clientOptions(options);
    if (options.relayTo) checkRelayTarget(options.relayTo);
    this.#options = options;
    this.#backoff = options.backoff;
    this.#transportOptions = options.transport;
    this.#guard = new LoopGuard(options.loopGuard);
    this.#requests = new Requests({
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
      getToken: options.getToken,
      stopped: this.#stopController.signal,
      requestTimeout: options.requestTimeout,
      onUserChange: () => this.#forgetUser(),
    });
    const calls = { requests: this.#requests, baseUrl: options.baseUrl };
    this.#typingCalls = new Typing({ ...calls, stopped: this.#stopController.signal, report: (error) => this.#report(error) });
    this.#presence = new Presence(calls);
    if (options.onStatus) this.#statusListeners.add(options.onStatus);
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) {
        // Stopped before it started: every call rejects, and nothing is ever sent.
        this.#stopController.abort();
        this.#machine = transition(this.#machine, { type: "stop" });
        return;
      }
      const onAbort = () => this.stop();
      signal.addEventListener("abort", onAbort, { once: true });
      this.#cleanups.push(() => signal.removeEventListener("abort", onAbort));
    }
    // On the server side of a framework there is no page to keep live: the app's
    // calls work, but nothing is polled until the client is created in a browser.
    if (!inBrowser()) return;
    this.#start().catch((error) => {
      // Whatever failed while joining the other tabs, this tab still shows live data.
      this.#report(asSyncError("internal", error));
      this.#pollAlone();
    });
  }

  /** The current connection status, one of STATUS. */
  get status() {
    return this.#machine.status;
  }

  /**
   * With status `error`: the SyncError the server refused the user with for good
   * (`status` and `problem` attached); null otherwise.
   */
  get error() {
    return this.#machine.status === STATUS.ERROR ? this.#machine.error : null;
  }

  /**
   * What a page renders: `{communities, unread, notifications, online, status}`, frozen.
   * The same object until something in it changes, for useSyncExternalStore and the
   * like; a change is announced to subscribe() and onStatus() callbacks.
   */
  getSnapshot() {
    return this.#snapshot;
  }

  /** Whether this tab is the one talking to the server. */
  get isLeader() {
    return this.#leader;
  }

  /** The last known community list, with the joins and leaves still pending. */
  get communities() {
    return this.#visible();
  }

  /** Unread notifications (100 means 100 or more), or null from a server that does not count them. */
  get notificationsUnread() {
    return this.#state.notificationsUnread;
  }

  /**
   * Members online per community id (`{"c-1": 3}`), as of the last answer, or null from
   * a server that does not count presence.
   */
  get online() {
    return this.#state.online;
  }

  /**
   * Call `callback(update)` for every answer: `{communities, added, removed, updated,
   * changes, notificationsUnread, online, truncated, status, source, relayed, ...}`. If a state
   * is already known the callback gets it at once. `watch` declares topics, as watch()
   * does: `changes` holds the activity of those topics, and of no others. Returns a
   * function that unsubscribes.
   */
  subscribe(callback, { watch = null } = {}) {
    const subscription = { callback, watches: watch === null ? [] : checkWatches(watch) };
    this.#subscribers.add(subscription);
    if (subscription.watches.length > 0) this.#watchesMoved(true);
    if (this.#hasState) {
      const shown = { ...this.#state, communities: this.#visible() };
      const update = updateForWatches({ ...followUpdate({ communities: [] }, shown), relayed: false }, subscription.watches);
      queueMicrotask(() => this.#subscribers.has(subscription) && isolated(callback, update));
    }
    return () => {
      if (this.#subscribers.delete(subscription) && subscription.watches.length > 0) this.#watchesMoved(true);
    };
  }

  /**
   * Call `callback(change, update)` for each change entry the server sends (each reaches
   * every tab once), only those whose `type` is in `types` if given, for example
   * `["activity", "notification"]`. `watch` as for subscribe(). Returns a function that
   * unsubscribes.
   */
  onChange(callback, { types = null, watch = null } = {}) {
    return this.subscribe(
      (update) => {
        for (const change of update.changes) {
          if (types === null || types.includes(change?.type)) isolated(callback, change, update);
        }
      },
      { watch },
    );
  }

  /**
   * Watch topics below communities: `watches` are `"<community_id>/<topic>"` (for
   * example `"c-1/thread:t-9"`) or `"<community_id>/*"` (every topic of the community),
   * at most 20. Calls `callback(change, update)` for each activity change of those
   * topics, its `topic` and `data` included. The leader tab polls the watches of every
   * tab of this user; each tab receives the activity of its own watches only. Throws a
   * TypeError for a malformed watch or more than 20. Returns a function that stops
   * watching.
   */
  watch(watches, callback) {
    const list = checkWatches(watches);
    if (typeof callback !== "function") throw new TypeError("watch needs a callback");
    return this.subscribe(
      (update) => {
        for (const change of update.changes) if (isTopicChange(change)) isolated(callback, change, update);
      },
      { watch: list },
    );
  }

  /**
   * Mark a community's activity read up to now (`PUT /me/communities/{id}/read`) and
   * resolve with the server's entry for it (`unread: 0`). Every tab of this user in
   * this browser shows `unread: 0` at once; the server's next answer confirms it, and
   * other devices see it through their own polls. Rejects with a SyncError: `not-found`
   * when the user is not a member; the server's count then comes back.
   */
  markRead(communityId) {
    const path = `/me/communities/${encodeURIComponent(communityId)}/read`;
    const notFound = `not a member of community ${communityId}, or the server keeps no read markers`;
    return this.#markRead(readKey(communityId), path, notFound);
  }

  /** Mark every notification read (`PUT /me/notifications/read`), like markRead. */
  markNotificationsRead() {
    return this.#markRead(readKey(), "/me/notifications/read", "the server keeps no notifications read marker");
  }

  /**
   * One page of the user's notifications, newest first (`GET /me/notifications`):
   * resolves with `{notifications, nextCursor, body}`; pass `nextCursor` back as
   * `cursor` for the next, older page (null after the last). Rejects with a SyncError.
   */
  async notifications({ cursor = null, limit = null } = {}) {
    const url = notificationsUrl(this.#options.baseUrl, { cursor, limit });
    return notificationsPage(await this.#requests.call("GET", url, "the server lists no notifications"));
  }

  /**
   * Who of a community's members is online now (`GET /communities/{id}/presence`):
   * resolves with `{online, users, truncated}`, `users` being `{id, name, since}`,
   * longest online first (at most 100; `online` counts them all). Asks conditionally:
   * an unchanged list costs the server no body. Rejects with a SyncError: `not-found`
   * when the user is not a member.
   */
  async presence(communityId) {
    return this.#presence.list(communityId);
  }

  /**
   * Who of a community's members is reading a topic now: their held polls watch it
   * (`GET /communities/{id}/presence?topic=`). Resolves like presence(), asked
   * conditionally too; `since` is when they started reading.
   */
  async readers(communityId, topic) {
    if (typeof topic !== "string" || !topic) throw new TypeError("readers needs a topic");
    return this.#presence.list(communityId, topic);
  }

  /** Whether the user shows in presence counts and lists (`GET /me/presence`). */
  async presenceVisible() {
    const body = await this.#requests.call("GET", `${trimSlash(this.#options.baseUrl)}/me/presence`, "the server keeps no presence");
    return body?.visible !== false;
  }

  /**
   * Show the user in presence counts and lists, or hide them everywhere
   * (`PUT /me/presence`); resolves with the stored choice. Counts follow within the
   * server's presence interval.
   */
  async setPresenceVisible(visible) {
    const url = `${trimSlash(this.#options.baseUrl)}/me/presence`;
    const body = await this.#requests.call("PUT", url, "the server keeps no presence", { visible: visible === true });
    return body?.visible !== false;
  }

  /**
   * A community as the server shows it to this user (`GET /communities/{id}`), with the
   * version an edit names: resolves with `{community, etag}`, `community` carrying its
   * `member_count`, `etag` the answer's ETag (null when the page cannot read it). Throws
   * a TypeError for a malformed id; rejects with a SyncError, `not-found` for no such
   * community or a private one the user is not in.
   */
  getCommunity(communityId) {
    const url = communityUrl(this.#options.baseUrl, checkCommunityId(communityId));
    return this.#community(url, { communityId });
  }

  /**
   * Change a community's fields (`PATCH /communities/{id}`: any of `slug`, `name`,
   * `logo_url`, `is_public`) only while it is at the version `ifMatch` names, the `etag`
   * of getCommunity() or of the last edit (`"*"`: whatever version it is at). Resolves
   * with `{community, etag}`, the community as changed and its new version. Another
   * edit came first: rejects with a SyncError of kind `conflict`, `currentEtag` naming
   * the version it is at, and nothing changed; read it again and decide. Other
   * failures reject as the other calls do. Not retried. Throws a TypeError for a
   * malformed id, fields that are not an object, or a missing, weak or unquoted
   * `ifMatch`.
   */
  updateCommunity(communityId, fields, options) {
    const { method, url, headers, payload } = communityUpdateRequest(this.#options.baseUrl, communityId, fields, options);
    return this.#community(url, { communityId, ifMatch: headers["If-Match"] }, { method, headers, payload });
  }

  /**
   * Say that the user is typing in `topic` of community `communityId`: call it on every
   * keystroke. Sends `PUT /me/typing` at once, then at most once a second while calls
   * keep coming (the calls of each second fold into one PUT at its end), which keeps
   * the server showing it. No call for 3 s, stopTyping() or stop() send `DELETE
   * /me/typing`, only after a PUT. A call for another place moves the typing there
   * with the next PUT. Sent by this tab itself, leader or not. Returns nothing and
   * never throws: a failure, a place the server refuses (then not asked again until
   * the place changes) or a malformed one are reported to `onError` as a SyncError of
   * kind `typing`.
   */
  typing(communityId, topic) {
    this.#typingCalls.typing(communityId, topic);
  }

  /** The user stopped typing (sent the message, left the composer): `DELETE /me/typing` if a PUT went. */
  stopTyping() {
    this.#typingCalls.stop();
  }

  /**
   * Call `callback(typing)` whenever who types in this tab's watched topics changes:
   * `typing` is `{"<community_id>/<topic>": [{id, name}]}`, one key per topic someone
   * types in (never the user), `{}` when nobody does; a `"c-1/*"` watch covers every
   * topic of c-1. The lists come with the polls of the watched topics, in every tab.
   * With `watch`, declares those watches (as subscribe() does) and reports theirs
   * only. Returns a function that unsubscribes.
   */
  onTyping(callback, { watch = null } = {}) {
    if (typeof callback !== "function") throw new TypeError("onTyping needs a callback");
    const watches = watch === null ? null : checkWatches(watch);
    const listener = { callback, watches, last: {} };
    const unsubscribe = watches === null ? null : this.subscribe(() => {}, { watch: watches });
    this.#typingListeners.add(listener);
    queueMicrotask(() => this.#deliverTyping());
    return () => {
      this.#typingListeners.delete(listener);
      unsubscribe?.();
    };
  }

  /**
   * Join a public community (`PUT /communities/{id}/members/me`). Every tab of this
   * user in this browser lists it at once, as an entry with what is known (`known`:
   * its `name`, `slug`, `logo_url`, `is_public`, for example from a public list),
   * `role: "member"`, `unread: 0` and `pending: true`, until an answer of the polls
   * lists it. Resolves with the server's membership `{user_id, community_id, role,
   * joined_at}`. Refused (or unanswered): every tab takes the entry out again and
   * reports the SyncError (kind `join`, the server's `problem` attached) to
   * `onError`, and the promise rejects with it. Throws a TypeError for a malformed id.
   */
  join(communityId, known = {}) {
    checkCommunityId(communityId);
    return this.#changeMembership("join", communityId, joinEntry(communityId, known));
  }

  /**
   * Leave a community (`DELETE /communities/{id}/members/me`), optimistic as join():
   * every tab takes it out of the list at once, until an answer of the polls no
   * longer lists it; resolves with nothing. Refused: every tab shows it again, and the
   * SyncError (kind `leave`) is reported and rejected with.
   */
  leave(communityId) {
    checkCommunityId(communityId);
    return this.#changeMembership("leave", communityId, null);
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

  /**
   * Start over after `unauthorized`, once the app can produce a valid token. From any
   * tab: a follower asks the leader, and rejoins the election if it had stepped down.
   */
  reconnect() {
    if (this.#stopController.signal.aborted) return;
    if (this.#leader) {
      this.#interrupt("reconnect");
      return;
    }
    this.#post({ type: "reconnect" });
    if (this.#outOfQueue) this.#joinElection();
  }

  /**
   * Stop polling, leave the election (another tab takes over) and close the channel;
   * a typing user stops typing.
   */
  stop() {
    if (this.#stopController.signal.aborted) return;
    this.stopTyping();
    this.#stopController.abort();
    this.#requests.interruptLoop();
    this.#wakeUp?.();
    clearTimeout(this.#rollCallTimer);
    clearTimeout(this.#rejoinTimer);
    for (const cleanup of this.#cleanups) cleanup();
    this.#post({ type: "bye", tabId: this.#tabId });
    this.#closeChannel();
    this.#leader = false;
    this.#move({ type: "stop" });
  }

  // --- setup -------------------------------------------------------------

  async #start() {
    const election = pickElection(this.#options.election);
    this.#listenToPage();
    if (election === "none") return this.#pollAlone();
    let identity = this.#options.channelKey;
    if (identity == null) {
      identity = await this.#subjectAtStart();
      this.#subject = identity;
      this.#requests.expectUser(identity);
    }
    if (this.#stopController.signal.aborted) return undefined;
    const name = channelName(absoluteUrl(this.#options.baseUrl), identity);
    if (name === null) return this.#pollAlone(); // no identity: nothing may be shared
    try {
      this.#channel = new BroadcastChannel(name);
    } catch {
      return this.#pollAlone();
    }
    this.#channelName = name;
    this.#election = election;
    this.#channel.onmessage = (event) => this.#onChannelMessage(event.data);
    // Ask the leader (if any) for what it knows, so this tab renders at once.
    this.#post({ type: "hello", tabId: this.#tabId, visible: pageVisible() });
    this.#announceWatches();
    this.#joinElection();
    return undefined;
  }

  /** The user the tab's token is for, or null (getToken failed, or not a JWT). */
  async #subjectAtStart() {
    try {
      return tokenSubject(await this.#options.getToken({ forceRefresh: false }));
    } catch (error) {
      this.#report(new SyncError("token", `getToken failed: ${error?.message ?? error}`, { cause: error }));
      return null;
    }
  }

  #joinElection() {
    if (this.#stopController.signal.aborted || !this.#channelName) return;
    this.#outOfQueue = false;
    this.#leaveElection();
    const controller = new AbortController();
    this.#electionController = controller;
    // Left (or stopped) either way; the stop signal keeps no listener per election joined.
    const signal = anySignal([this.#stopController.signal, controller.signal]);
    const onLeader = () => this.#becomeLeader();
    if (this.#election === "locks") {
      electWithWebLocks(this.#channelName, { onLeader, onUnavailable: () => this.#pollAlone(), signal });
    } else {
      new HeartbeatElection(this.#channelName, { tabId: this.#tabId, onLeader, onResign: () => this.#resign(), signal });
    }
  }

  /** Leave the election (and the lock, if held) without rejoining by itself. */
  #leaveElection() {
    this.#electionController?.abort();
    this.#electionController = null;
  }

  /** No other tab to share with (or none that may be trusted): poll for this one. */
  #pollAlone() {
    this.#leaveElection();
    this.#closeChannel();
    this.#election = "none";
    this.#becomeLeader();
  }

  #closeChannel() {
    try {
      this.#channel?.close();
    } catch {
      // Already closed.
    }
    this.#channel = null;
    this.#channelName = null;
    this.#subject = null;
    this.#otherWatches.clear();
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
      const onOnline = () => this.#interrupt("online");
      const onOffline = () => this.#interrupt("offline");
      const onPageHide = () => this.#post({ type: "bye", tabId: this.#tabId });
      // Back from the back-forward cache: its "bye" took its watches out of the polls.
      const onPageShow = (event) => event.persisted && this.#announceWatches();
      win.addEventListener("online", onOnline);
      win.addEventListener("offline", onOffline);
      win.addEventListener("pagehide", onPageHide);
      win.addEventListener("pageshow", onPageShow);
      this.#cleanups.push(() => {
        win.removeEventListener("online", onOnline);
        win.removeEventListener("offline", onOffline);
        win.removeEventListener("pagehide", onPageHide);
        win.removeEventListener("pageshow", onPageShow);
      });
    }
  }

  #becomeLeader() {
    if (this.#stopController.signal.aborted || this.#leader) return;
    this.#leader = true;
    this.#followerVisibility.clear();
    this.#refused.clear();
    // Joins and leaves the server already answered: any request from here on sees them.
    for (const op of this.#memberships.values()) if (op.answered) op.after = this.#requestNo;
    if (this.#channel) this.#startRollCall();
    this.#post({ type: "leader", tabId: this.#tabId });
    this.#watchesMoved(false);
    // Whatever the old leader last said, this tab has no request of its own yet: the
    // other tabs are told so even when the status reads the same.
    this.#move({ type: "lead" }, { announce: true });
    if (!this.#running) this.#run();
  }

  #resign() {
    this.#leader = false;
    this.#requests.interruptLoop();
    this.#wakeUp?.();
  }

  /**
   * `unauthorized` while leading: let another tab (whose app may hold a valid token)
   * try. This tab stays out of the queue until reconnect() or until a leader is live
   * again, so tabs that all hold stale tokens do not hand the lock round in a loop.
   */
  #stepDown(rejoinAfter) {
    this.#resign();
    this.#outOfQueue = true;
    this.#leaveElection();
    clearTimeout(this.#rejoinTimer);
    this.#rejoinTimer = setTimeout(() => this.#outOfQueue && this.#joinElection(), rejoinAfter);
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
      case "update": {
        if (this.#leader) return;
        const settled = this.#settleFromLeader(message.settled);
        if (!this.#follow(message, message.update) && settled) this.#showMemberships();
        break;
      }
      case "state":
        if (this.#leader) return;
        this.#learnMemberships(message.memberships);
        if (!this.#follow(message, { status: "current" })) this.#showMemberships();
        this.#move({ type: "follow", status: message.status });
        break;
      case "status":
        if (this.#leader) return;
        this.#move({ type: "follow", status: message.status });
        // Someone leads successfully: queue up again to take over when that tab closes.
        if (this.#outOfQueue && (message.status === STATUS.LIVE || message.status === STATUS.SMART)) this.#joinElection();
        break;
      case "hello":
        if (!this.#leader) return;
        this.#followerVisibility.set(message.tabId, message.visible);
        if (this.#hasState) {
          const memberships = [...this.#memberships.values()];
          this.#post({ type: "state", ...this.#stamp(), status: this.#machine.status, memberships });
        }
        else this.#post({ type: "status", status: this.#machine.status });
        this.#interrupt("visibility");
        break;
      case "leader":
        // A new leader took over: tell it whether this tab is being looked at, and what it watches.
        if (this.#leader) return;
        this.#post({ type: "visibility", tabId: this.#tabId, visible: pageVisible() });
        this.#announceWatches();
        break;
      case "visibility":
        if (!this.#leader) return;
        this.#followerVisibility.set(message.tabId, message.visible);
        this.#interrupt("visibility");
        break;
      case "bye":
        if (this.#leader) this.#followerVisibility.delete(message.tabId);
        if (this.#otherWatches.delete(message.tabId)) this.#watchesMoved(false);
        break;
      case "watch":
        if (typeof message.tabId !== "string" || !Array.isArray(message.watches)) return;
        this.#otherWatches.set(message.tabId, {
          watches: message.watches.filter((watch) => parseWatch(watch) !== null),
          seq: message.seq,
        });
        this.#rollCall?.add(message.tabId);
        this.#watchesMoved(false);
        break;
      case "watching":
        if (this.#leader || !Array.isArray(message.polled)) return;
        this.#watching = { polled: message.polled, refused: new Map(Array.isArray(message.refused) ? message.refused : []) };
        // Until the leader has heard this tab's latest watches, their absence means nothing.
        if (message.heard?.[this.#tabId] === this.#watchSeq) this.#reportUnpolled();
        break;
      case "refresh":
        if (this.#leader) this.#interrupt("refresh");
        break;
      case "reconnect":
        if (this.#leader) this.#interrupt("reconnect");
        break;
      case "membership":
        this.#heardMembership(message);
        break;
      case "read":
        if (this.#leader && typeof message.key === "string" && READ_PHASES.has(message.phase)) {
          const entry = message.entry !== null && typeof message.entry === "object" ? message.entry : null;
          this.#moveRead(message.key, message.phase, entry);
        }
        break;
    }
  }

  /** The state this tab holds, with what orders it against others. */
  #stamp() {
    return { from: this.#tabId, seq: this.#seq, state: this.#state };
  }

  /**
   * A state relayed by the leader: adopt it unless it is older than the one held.
   * Returns whether it did (and told the subscribers).
   */
  #follow({ from, seq, state }, leaderUpdate) {
    if (!state || typeof state !== "object" || !Array.isArray(state.communities)) return false;
    const incoming = { from, seq, serverTime: state.serverTime };
    if (this.#hasState && !isNewerState(this.#heard, incoming)) return false;
    const update = followUpdate(this.#state, state, leaderUpdate);
    this.#state = state;
    this.#heard = incoming;
    this.#hasState = true;
    // What the list shows is settled here too: a leader of an older version settles nothing.
    const settle = { communities: state.communities, requestNo: -Infinity, now: Date.now(), maxAge: 2 * this.#options.requestTimeout };
    this.#memberships = settleMemberships(this.#memberships, settle).left;
    this.#emit(update);
    return true;
  }

  // --- watches -------------------------------------------------------------

  /** This tab's watches, every subscription's, in the order they were declared. */
  #declaredWatches() {
    const declared = [];
    for (const { watches } of this.#subscribers) {
      for (const watch of watches) if (!declared.includes(watch)) declared.push(watch);
    }
    return declared;
  }

  /**
   * This tab's watches (`own`) or another tab's moved. Looked at once the current task
   * is done, so that a page declaring many at once sends one message and one poll.
   */
  #watchesMoved(own) {
    if (own) this.#ownWatchesMoved = true;
    if (this.#watchesQueued) return;
    this.#watchesQueued = true;
    queueMicrotask(() => {
      this.#watchesQueued = false;
      if (this.#stopController.signal.aborted) return;
      if (this.#ownWatchesMoved) {
        this.#ownWatchesMoved = false;
        this.#watchSeq += 1;
        this.#announceWatches();
        this.#deliverTyping();
      }
      if (this.#leader) this.#rewatch();
    });
  }

  #announceWatches() {
    this.#post({ type: "watch", tabId: this.#tabId, seq: this.#watchSeq, watches: this.#declaredWatches() });
  }

  /**
   * A tab that takes over knows the watches the other tabs last declared; those that
   * do not declare them again within WATCH_ROLL_CALL (they answer the "leader" message)
   * closed without a "bye", and their watches leave the polls.
   */
  #startRollCall() {
    this.#rollCall = new Set();
    clearTimeout(this.#rollCallTimer);
    this.#rollCallTimer = setTimeout(() => {
      const answered = this.#rollCall;
      this.#rollCall = null;
      if (!this.#leader || answered === null) return;
      let moved = false;
      for (const tabId of [...this.#otherWatches.keys()]) {
        if (!answered.has(tabId)) moved = this.#otherWatches.delete(tabId) || moved;
      }
      if (moved) this.#watchesMoved(false);
    }, WATCH_ROLL_CALL);
  }

  /** Every tab's watches: this tab's first, then the others' in the order they were heard. */
  #declaredLists() {
    return [this.#declaredWatches(), ...[...this.#otherWatches.values()].map((tab) => tab.watches)];
  }

  /** The watches the next poll carries: every tab's, less the refused ones. */
  #pollWatches() {
    const lists = this.#declaredLists();
    const declared = new Set(lists.flat());
    // A refusal lasts while some tab declares the watch: declared anew, it is tried anew.
    for (const watch of [...this.#refused.keys()]) if (!declared.has(watch)) this.#refused.delete(watch);
    return watchUnion(lists.map((list) => list.filter((watch) => !this.#refused.has(watch))));
  }

  /**
   * The leader's watches moved: tell every tab what is polled now, and cut short a poll
   * in flight that carries others, so that the new one leaves at once with the same
   * cursor. Sent in answer to every declaration, since a tab whose watches did not fit
   * learns it only from this.
   */
  #rewatch() {
    const polled = this.#pollWatches();
    const refused = [...this.#refused];
    const heard = Object.fromEntries([...this.#otherWatches].map(([tabId, tab]) => [tabId, tab.seq]));
    this.#watching = { polled, refused: new Map(refused) };
    this.#post({ type: "watching", polled, refused, heard });
    this.#reportUnpolled();
    const request = this.#loopRequest;
    if (request && request.transport !== SNAPSHOT && !sameWatches(request.watches, polled)) {
      this.#rewatched = true;
      this.#requests.interruptLoop();
    }
  }

  /** Report this tab's watches that the polls leave out: each once, until it is polled again. */
  #reportUnpolled() {
    const { polled, refused } = this.#watching;
    const unpolled = uncoveredWatches(this.#declaredWatches(), polled);
    this.#unpolledReported = new Set([...this.#unpolledReported].filter((watch) => unpolled.includes(watch)));
    const fresh = unpolled.filter((watch) => !this.#unpolledReported.has(watch));
    for (const watch of fresh) this.#unpolledReported.add(watch);
    const reasons = new Map();
    for (const watch of fresh.filter((watch) => refused.has(watch))) {
      const why = refused.get(watch);
      reasons.set(why, [...(reasons.get(why) ?? []), watch]);
    }
    for (const [why, watches] of reasons) {
      this.#report(new SyncError("watch", `the server refuses ${watches.join(", ")}: ${why}`, { watches }));
    }
    const tooMany = fresh.filter((watch) => !refused.has(watch));
    if (tooMany.length > 0) {
      const message = `the tabs of this browser watch more than ${MAX_WATCHES} topics: ${tooMany.join(", ")} not polled`;
      this.#report(new SyncError("watch", message, { watches: tooMany }));
    }
  }

  /**
   * The server refused a poll for a watch it carried, without saying which. A watch is
   * refused for the reason `GET /communities/{id}` answers 404 (no such community, or a
   * private one the user is not in), so ask that of each watched community, set aside
   * the watches of those it does not show (every watch sent, if it shows them all) and
   * poll again at once without them.
   */
  async #setAsideRefused(request, error) {
    let unknown = new Set();
    if (error.status === 404) {
      const communities = watchedCommunities(request.watches);
      const shown = await Promise.all(communities.map((id) => this.#communityShown(id)));
      if (this.#stopController.signal.aborted || !this.#leader) return { delay: 0, news: false };
      unknown = new Set(communities.filter((_, at) => shown[at] === false));
      if (unknown.size === 0 && shown.includes(null)) {
        // Not known yet which one: a failure like any other, asked again after the backoff.
        this.#report(error);
        this.#move({ type: "failure" });
        return { delay: retryDelay(this.#failures++, null, this.#backoff), news: false };
      }
    }
    const why = error.problem?.detail || `HTTP ${error.status}`;
    const declared = [...new Set(this.#declaredLists().flat())];
    for (const watch of refusedWatches(request.watches, unknown, declared)) {
      const { community } = parseWatch(watch);
      this.#refused.set(watch, unknown.has(community) ? `no community ${community} that this user may follow` : why);
    }
    this.#rewatch();
    return { delay: 0, news: false };
  }

  /** Whether the server shows this user a community: true, false (404) or null (no answer). */
  async #communityShown(communityId) {
    const url = communityUrl(this.#options.baseUrl, communityId);
    try {
      await this.#requests.call("GET", url, `no community ${communityId} for this user`);
      return true;
    } catch (error) {
      return error instanceof SyncError && error.kind === "not-found" ? false : null;
    }
  }

  /** The user joined communities: their refused watches may be polled now. */
  #retryRefusedOn(added) {
    if (this.#refused.size === 0 || added.length === 0) return;
    const retried = watchesOn([...this.#refused.keys()], added.map((community) => community.id));
    for (const watch of retried) this.#refused.delete(watch);
    if (retried.length > 0) this.#watchesMoved(false);
  }

  // --- read markers --------------------------------------------------------

  /**
   * The PUT is sent by the tab it is asked in, follower or leader: no request crosses
   * the channel, so a leader that closes meanwhile loses nothing. The leader is told
   * of each phase so that every tab shows the read at once and keeps showing it.
   */
  async #markRead(key, path, notFound) {
    if (this.#stopController.signal.aborted) throw new SyncError("internal", "the client is stopped");
    this.#moveRead(key, "begin");
    let entry;
    try {
      entry = await this.#requests.call("PUT", `${trimSlash(this.#options.baseUrl)}${path}`, notFound);
    } catch (error) {
      this.#moveRead(key, "failed");
      throw error;
    }
    this.#moveRead(key, "done", entry !== null && typeof entry === "object" && !Array.isArray(entry) ? entry : null);
    return entry;
  }

  /** A read marker moving (`begin`, `done` or `failed`) here or, when leading, in a follower. */
  #moveRead(key, phase, entry = null) {
    if (!this.#leader) {
      this.#post({ type: "read", key, phase, entry });
      if (phase !== "failed") this.#adoptRead(applyRead(this.#state, key, entry));
      return;
    }
    if (phase === "failed") {
      // The server's count is the truth again: ask for it rather than wait a long poll.
      this.#pendingReads.delete(key);
      this.#interrupt("refresh");
      return;
    }
    // Until the PUT is answered no request is known to see it; then every later one does.
    const after = phase === "begin" ? Infinity : this.#requestNo;
    this.#pendingReads.set(key, { after, since: Date.now() });
    this.#adoptRead(applyRead(this.#state, key, entry));
  }

  #adoptRead(state) {
    if (state === this.#state) return;
    const update = localReadUpdate(this.#state, state);
    this.#state = state;
    if (this.#leader) {
      this.#seq += 1;
      this.#heard = { from: this.#tabId, seq: this.#seq, serverTime: state.serverTime };
      this.#post({ type: "update", ...this.#stamp(), update });
    }
    this.#emit(update);
  }

  // --- optimistic joins and leaves ------------------------------------------

  /** The community list as this browser shows it: the server's, and the pending joins and leaves. */
  #visible() {
    return overlayMemberships(this.#state.communities, this.#memberships.values());
  }

  /**
   * Like markRead, the request is sent by the tab it is asked in, leader or not, and
   * every phase is told to the other tabs, which show it at once: so a leader that
   * closes meanwhile loses nothing, and a refusal rolls back everywhere.
   */
  async #changeMembership(kind, communityId, entry) {
    if (this.#stopController.signal.aborted) throw new SyncError("internal", "the client is stopped");
    const op = { key: randomId(), communityId, kind, entry };
    this.#moveMembership("begin", op);
    this.#post({ type: "membership", phase: "begin", op });
    const url = membershipUrl(this.#options.baseUrl, communityId);
    let body;
    try {
      body = await this.#requests.call(kind === "join" ? "PUT" : "DELETE", url, `no community ${communityId} this user may ${kind}`);
    } catch (failure) {
      const error = membershipError(kind, communityId, failure);
      this.#moveMembership("failed", op);
      if (this.#stopController.signal.aborted) throw error;
      const { message, status, retryAfter, problem } = error;
      this.#post({ type: "membership", phase: "failed", op, error: { message, status, retryAfter, problem } });
      this.#report(error);
      throw error;
    }
    const membership = body !== null && typeof body === "object" && !Array.isArray(body) ? body : null;
    this.#moveMembership("done", op, membership);
    this.#post({ type: "membership", phase: "done", op, membership });
    return kind === "join" ? body : undefined;
  }

  /**
   * A join or leave moving here or in another tab: `begin` (shown from now on), `done`
   * (the server answered: the leader's requests from now on see it) or `failed`
   * (rolled back). A phase of an op that was settled, or replaced by a later join or
   * leave of the same community, changes nothing.
   */
  #moveMembership(phase, { key, communityId, kind, entry }, membership = null) {
    const held = this.#memberships.get(communityId);
    if (phase === "begin") {
      const op = { key, communityId, kind, entry, answered: false, after: Infinity, since: Date.now() };
      this.#memberships.set(communityId, op);
    } else if (held?.key !== key) {
      return;
    } else if (phase === "done") {
      const joined = held.kind === "join" && membership !== null;
      const fields = joined ? { role: membership.role ?? held.entry.role, joined_at: membership.joined_at ?? null } : {};
      const after = this.#leader ? this.#requestNo : Infinity;
      const op = { ...held, entry: joined ? { ...held.entry, ...fields } : held.entry, answered: true, after };
      this.#memberships.set(communityId, op);
    } else {
      this.#memberships.delete(communityId);
    }
    this.#showMemberships();
  }

  /** A join or leave of another tab, as it told the others. */
  #heardMembership({ phase, op, membership = null, error = null }) {
    if (op === null || typeof op !== "object" || typeof op.key !== "string" || typeof op.communityId !== "string") return;
    if (phase === "begin") {
      const joinable = op.kind === "join" && op.entry !== null && typeof op.entry === "object" && op.entry.id === op.communityId;
      if (joinable || op.kind === "leave") this.#moveMembership("begin", op);
    } else if (phase === "done") {
      this.#moveMembership("done", op, membership !== null && typeof membership === "object" ? membership : null);
    } else if (phase === "failed") {
      this.#moveMembership("failed", op);
      const { message, status = null, retryAfter = null, problem = null } = error ?? {};
      const kind = op.kind === "join" ? "join" : "leave";
      this.#report(new SyncError(kind, String(message ?? `could not ${kind} community ${op.communityId}`), { status, retryAfter, problem }));
    }
  }

  /** The ops the leader settled with the answer it relays; returns whether any was held here. */
  #settleFromLeader(settled) {
    if (!Array.isArray(settled) || settled.length === 0) return false;
    const keys = new Set(settled);
    let dropped = false;
    for (const [communityId, op] of [...this.#memberships]) {
      if (keys.has(op.key)) dropped = this.#memberships.delete(communityId) || dropped;
    }
    return dropped;
  }

  /** The leader's pending ops, for a tab that just joined: those it does not know yet. */
  #learnMemberships(ops) {
    if (!Array.isArray(ops)) return;
    for (const op of ops) {
      if (op === null || typeof op !== "object" || this.#memberships.has(op.communityId)) continue;
      this.#heardMembership({ phase: "begin", op });
      if (op.answered === true) this.#moveMembership("done", op);
    }
  }

  /** Tell the subscribers if the list shown changed, without news from the server. */
  #showMemberships() {
    if (!this.#hasState) return; // the first state shows them
    const { added, removed, updated } = diffCommunities(this.#shown, this.#visible());
    if (added.length + removed.length + updated.length === 0) return;
    this.#emit({ ...followUpdate(this.#state, this.#state, { status: "membership", source: "local" }), relayed: false });
  }

  // --- the fetch loop (leader only) --------------------------------------

  async #run() {
    this.#running = true;
    const stopped = this.#stopController.signal;
    try {
      while (!stopped.aborted && this.#leader) {
        let delay;
        try {
          delay = await this.#turn();
        } catch (error) {
          // A bug here must not end polling while the page still says "live".
          this.#report(asSyncError("internal", error));
          this.#move({ type: "failure" });
          delay = retryDelay(this.#failures++, null, this.#backoff);
        }
        if (!stopped.aborted && this.#leader && delay > 0) await this.#sleep(delay);
      }
    } finally {
      this.#running = false;
    }
  }

  /** Wait while there is nothing to do, else make one request; returns the next delay. */
  async #turn() {
    if (this.#shouldPause()) {
      this.#move({ type: "pause" });
      await this.#sleep(Infinity);
      return 0;
    }
    if (globalThis.navigator?.onLine === false) {
      this.#move({ type: "offline" });
      await this.#sleep(Infinity);
      return 0;
    }
    if (this.#machine.status === STATUS.ERROR) {
      // Refused for good: nothing is asked until reconnect() or another user's token.
      await this.#sleep(Infinity);
      return 0;
    }
    this.#move({ type: "wake" });
    // The guard's pause holds whatever wakes the loop: a wake-up only looks again.
    const held = this.#guard.holdFor(Date.now());
    if (held > 0) return held;
    const { delay, news } = await this.#step();
    if (this.#guard.record(Date.now(), news)) {
      this.#report(new SyncError("loop", "too many requests without progress: holding off"));
      this.#move({ type: "failure" });
      return Math.max(delay, this.#guard.holdFor(Date.now()));
    }
    return delay;
  }

  /** One request and what it means: `{delay, news}`. */
  async #step() {
    const request = { ...this.#nextRequest(), no: ++this.#requestNo };
    const startedAt = Date.now();
    let outcome;
    this.#loopRequest = request;
    try {
      outcome = await this.#exchange(request);
    } catch (error) {
      // Paused, stopped, woken on purpose, or the watches moved: ask again at once.
      if (error?.name === "AbortError") return { delay: 0, news: false };
      if (!(error instanceof SyncError)) throw error;
      if (error.kind === "identity") return { delay: 0, news: false }; // starts over alone
      outcome = { kind: "failure", error, pollInterval: null };
    } finally {
      this.#loopRequest = null;
    }
    if (outcome.pollInterval !== null) this.#pollInterval = outcome.pollInterval;
    if (this.#stopController.signal.aborted || !this.#leader) return { delay: 0, news: false };
    const heldFor = Date.now() - startedAt;
    if (outcome.kind === "answer") return this.#answered(request, outcome, heldFor);
    if (outcome.kind === "refused-watch") return this.#setAsideRefused(request, outcome.error);
    this.#report(outcome.error);
    if (outcome.kind === "refused") {
      this.#move({ type: "refused", error: outcome.error });
      return { delay: 0, news: false };
    }
    if (outcome.kind === "unauthorized") {
      // Refused even with a fresh token: the app may log the user in again. Asked
      // again after the backoff, with a fresh token each time; a tab sharing the
      // user's poll first lets another tab, whose app may hold a valid token, try.
      this.#move({ type: "unauthorized" });
      if (this.#options.onUnauthorized) isolated(this.#options.onUnauthorized, outcome.error);
      const delay = retryDelay(this.#failures++, outcome.error.retryAfter, this.#backoff);
      if (this.#election === "none") return { delay, news: false };
      this.#stepDown(delay);
      return { delay: 0, news: false };
    }
    if (outcome.kind === "rejected") this.#state = { ...this.#state, cursor: null };
    else if (isDropped(outcome.error)) {
      this.#transport = recordTransportOutcome(
        this.#transport,
        { transport: request.transport, ok: false, heldFor },
        Date.now(),
        this.#transportOptions,
      );
    }
    this.#move({ type: "failure", offline: globalThis.navigator?.onLine === false });
    return { delay: retryDelay(this.#failures++, outcome.error.retryAfter, this.#backoff), news: false };
  }

  #answered(request, { answer, notModified }, heldFor) {
    this.#transport = recordTransportOutcome(this.#transport, { transport: request.transport, ok: true }, Date.now(), this.#transportOptions);
    const { progressed, news } = this.#apply(answer, request);
    if (progressed) this.#failures = 0;
    // A 304 confirms the list but carries no cursor; a poll without one answers
    // `reset` at once with a fresh cursor.
    this.#revalidated = request.conditional === true && notModified === true;
    this.#move({ type: "answer", mode: this.#transport.mode });
    const early = request.transport === LONG_POLL && answer.status === "unchanged" && heldFor < this.#options.minLongPollGap;
    this.#earlyStreak = early ? this.#earlyStreak + 1 : 0;
    return { delay: this.#delayAfter(request), news };
  }

  #nextRequest() {
    if (!this.#hasState) return { source: SNAPSHOT, transport: SNAPSHOT };
    if (!this.#state.cursor && !this.#revalidated) {
      // The cursor was rejected: revalidate the list we have against its ETag.
      return { source: SNAPSHOT, transport: SNAPSHOT, conditional: true };
    }
    if (this.#machine.catchUp) return { source: SMART_POLL, transport: SMART_POLL, catchUp: true };
    const transport = chooseTransport(this.#transport, Date.now(), this.#transportOptions);
    return { source: transport, transport };
  }

  #delayAfter(request) {
    if (request.transport === SNAPSHOT || request.catchUp) return 0;
    // A poll that answered without a cursor would be asked again without one.
    if (!this.#state.cursor) return this.#options.minLongPollGap;
    if (request.transport === LONG_POLL) {
      // Not held (a draining worker, a server that does not hold): a short gap, growing
      // only while it keeps happening; never the smart-poll interval.
      if (this.#earlyStreak === 0) return 0;
      return earlyUnchangedDelay(this.#earlyStreak, this.#options.minLongPollGap, this.#backoff);
    }
    return this.#pollInterval ?? this.#options.smartInterval;
  }

  #apply(answer, request) {
    const now = Date.now();
    const maxAge = 2 * this.#options.requestTimeout;
    this.#pendingReads = settleReads(this.#pendingReads, { changes: answer.changes ?? [], requestNo: request.no, now, maxAge });
    const communities = Array.isArray(answer.communities) ? answer.communities : null;
    const { left, settled } = settleMemberships(this.#memberships, { communities, requestNo: request.no, now, maxAge });
    this.#memberships = left;
    // A poll's typing lists are whole for the watches it carried: {} when nobody types.
    const typed = request.transport === SNAPSHOT ? answer : { ...answer, typing: typingFor(answer.typing, request.watches ?? []) };
    const before = this.#state;
    const applied = applyAnswer(before, maskReads(typed, this.#pendingReads), request.source);
    const { state, update, progressed } = applied;
    this.#state = state;
    this.#hasState = true;
    this.#retryRefusedOn(update.added);
    this.#seq += 1;
    this.#heard = { from: this.#tabId, seq: this.#seq, serverTime: state.serverTime };
    this.#post({ type: "update", ...this.#stamp(), update, settled });
    this.#emit(update);
    // Someone starting or stopping to type is news too: the loop guard must not hold it.
    return { progressed, news: applied.news || !sameTyping(before.typing, state.typing) };
  }

  /** Send one request, refreshing the token once on 401; returns what it means. */
  async #exchange(request) {
    // A tab the server refuses asks with a fresh token from the first try.
    const forced = this.#machine.status === STATUS.UNAUTHORIZED;
    let response = await this.#fetchOnce(request, forced);
    if (response.status === 401 && !forced) response = await this.#fetchOnce(request, true);
    return interpretResponse(response, request.transport, Date.now(), request.watches);
  }

  /**
   * Another user's token: the previous user's list, counts, pending reads, joins and
   * leaves, typing and cached presence go before anything is asked for the new one,
   * and a tab that shared the previous user's poll leaves that user's tabs, polling
   * for itself from a fresh snapshot.
   */
  #forgetUser() {
    const shared = this.#channelName !== null;
    if (shared) {
      this.#leaveElection();
      this.#closeChannel();
      this.#election = "none";
    }
    const before = this.#state;
    const shownBefore = this.#hasState;
    this.#state = initialState();
    this.#hasState = false;
    this.#pendingReads = new Map();
    this.#memberships = new Map();
    this.#presence.clear();
    this.#refused.clear();
    this.#heard = null;
    this.#typingCalls.reset();
    this.#requests.interruptLoop();
    this.#move({ type: "user" });
    this.#report(new SyncError("identity", shared ? "the token is for another user: polling for this tab alone" : "the token is for another user: starting over"));
    if (shownBefore) this.#emit({ ...followUpdate(before, this.#state, { status: "reset", source: "local" }), relayed: false });
    if (shared && !this.#leader) this.#becomeLeader();
  }

  /**
   * One HTTP exchange, read to the end: `{status, statusText, headers, body}`. The
   * timeout covers the body too, since a stalled body holds the loop as surely as a
   * stalled connection.
   */
  async #fetchOnce(request, forceRefresh) {
    const headers = {};
    let url;
    let timeout;
    this.#rewatched = false;
    if (request.transport === SNAPSHOT) {
      url = snapshotUrl(this.#options.baseUrl);
      timeout = this.#options.requestTimeout;
      if (request.conditional && this.#state.hash) headers["If-None-Match"] = `"${this.#state.hash}"`;
    } else {
      const wait = request.transport === LONG_POLL ? this.#options.pollTimeout : 0;
      request.watches = this.#pollWatches();
      const { cursor, hash } = this.#state;
      url = buildPollUrl(this.#options.baseUrl, { cursor, hash, timeout: wait, watches: request.watches });
      timeout = request.transport === LONG_POLL ? wait * 1000 + this.#options.pollTimeoutGrace : this.#options.requestTimeout;
    }
    // The watches moved while the token was fetched: this poll would carry the old ones.
    return this.#requests.send(url, { headers, timeout, forceRefresh, loop: true, stale: () => this.#rewatched });
  }

  /** A read or an edit of one community: `{community, etag}`, or a thrown SyncError. */
  async #community(url, context, request = {}) {
    if (this.#stopController.signal.aborted) throw new SyncError("internal", "the client is stopped");
    return communityResult(await this.#requests.authorized(url, request), context);
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

  /**
   * Something changed outside the loop (visibility, network, a refresh): cut any wait
   * short and look again. The backoff count stays: only progress resets it, and the
   * loop guard bounds how often wake-ups can turn into requests.
   */
  #interrupt(reason) {
    if (!this.#leader) return;
    if (reason === "reconnect") this.#move({ type: "reconnect" });
    const abort = this.#shouldPause() || reason === "offline" || reason === "refresh" || reason === "reconnect";
    if (abort) this.#requests.interruptLoop();
    this.#wakeUp?.();
  }

  // --- notifying: every integrator callback is isolated --------------------

  /**
   * Hand an update to every subscriber, with the list as this browser shows it (the
   * pending joins and leaves on top of the server's) and what changed since the list
   * they last received.
   */
  #emit(update) {
    const communities = this.#visible();
    this.#renew(communities);
    const shown = { ...update, communities, ...diffCommunities(this.#shown, communities) };
    this.#shown = communities;
    for (const { callback, watches } of [...this.#subscribers]) isolated(callback, updateForWatches(shown, watches));
    if (this.#options.relayTo) this.#relay({ type: RELAY_UPDATE, update: updateForWatches(shown, this.#declaredWatches()) });
    this.#deliverTyping();
  }

  /** The snapshot for `communities` (the list shown) and the state held now. */
  #renew(communities) {
    const { notificationsUnread, online } = this.#state;
    this.#snapshot = nextSnapshot(this.#snapshot, { communities, notificationsUnread, online, status: this.#machine.status });
  }

  /** Tell each onTyping listener who types in its watched topics, when that changed. */
  #deliverTyping() {
    if (this.#typingListeners.size === 0) return;
    const declared = this.#declaredWatches();
    for (const listener of [...this.#typingListeners]) {
      const typing = typingFor(this.#state.typing, listener.watches ?? declared);
      if (sameTyping(listener.last, typing) || !this.#typingListeners.has(listener)) continue;
      listener.last = typing;
      isolated(listener.callback, typing);
    }
  }

  /**
   * Move the loop's state machine; on a new status tell the listeners, the parent page
   * and (while leading) the other tabs, which are also told when `announce` says so.
   */
  #move(event, { announce = false } = {}) {
    const before = this.#machine.status;
    this.#machine = transition(this.#machine, event);
    const { status } = this.#machine;
    if (this.#leader && (status !== before || announce)) this.#post({ type: "status", status });
    if (status === before) return;
    this.#renew(this.#hasState ? this.#visible() : []);
    for (const callback of [...this.#statusListeners]) isolated(callback, status);
    this.#relay({ type: RELAY_STATUS, status });
  }

  #report(error) {
    const onError = this.#options.onError;
    if (onError) isolated(onError, error);
  }

  #relay(message) {
    const relay = this.#options.relayTo;
    if (relay) isolated(() => relay.target.postMessage(message, relay.targetOrigin));
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

// --- small helpers ---------------------------------------------------------

const READ_PHASES = new Set(["begin", "done", "failed"]);

/**
 * Call an integrator's callback so that its bug cannot stop the loop: a throw (or a
 * rejected promise) is reported to the page, the way an uncaught error would be, and
 * the client carries on.
 */
function isolated(callback, ...args) {
  try {
    const result = callback(...args);
    if (typeof result?.then === "function") result.then(undefined, reportUncaught);
  } catch (error) {
    reportUncaught(error);
  }
}

function reportUncaught(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else globalThis.console?.error?.(error);
}

function asSyncError(kind, error) {
  return error instanceof SyncError ? error : new SyncError(kind, String(error?.message ?? error), { cause: error });
}

/** A page or a worker, where there is someone to keep live; not a framework's server side. */
function inBrowser() {
  return (typeof globalThis.window === "object" && globalThis.window !== null) || typeof globalThis.WorkerGlobalScope === "function";
}

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
