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
 * of that user follow over a BroadcastChannel. Every decision (delays, diffs, ordering,
 * what a response means, the state machine's transitions) is a pure function in
 * community-sync-decisions.js. The parts, each a module of its own: what the tab holds
 * and tells the app (community-sync-store.js), the tabs' channel and their part in the
 * election (community-sync-tabs.js, the election itself in community-sync-election.js),
 * the fetch loop (community-sync-loop.js), the watches across tabs
 * (community-sync-watches.js), reads, joins and leaves shown before the server does
 * (community-sync-optimistic.js), typing and presence (community-sync-calls.js), and
 * every request (community-sync-requests.js). This module is the public face, and
 * wires the parts together. No dependencies, no globals.
 */

import {
  EMPTY_SNAPSHOT,
  STATUS,
  SyncError,
  checkCommunityId,
  checkWatches,
  clientOptions,
  communityResult,
  communityUpdateRequest,
  communityUrl,
  followUpdate,
  initialMachine,
  isTopicChange,
  joinEntry,
  notificationsPage,
  notificationsUrl,
  onlineLabel,
  readKey,
  transition,
  trimSlash,
  unreadLabel,
} from "./community-sync-decisions.js";
import { Presence, Typing } from "./community-sync-calls.js";
import { Loop } from "./community-sync-loop.js";
import { Optimistic } from "./community-sync-optimistic.js";
import { RELAY_STATUS, RELAY_UPDATE, listenForRelay } from "./community-sync-relay.js";
import { Requests } from "./community-sync-requests.js";
import { Store, isolated } from "./community-sync-store.js";
import { Tabs } from "./community-sync-tabs.js";
import { Watches } from "./community-sync-watches.js";

// listenForRelay now lives in community-sync-relay.js (a parent page needs nothing
// else); it stays importable from here for pages that already do.
export { RELAY_STATUS, RELAY_UPDATE, SyncError, listenForRelay };
// Labels for what getSnapshot() holds: "3 new" ("99+" from 100), "3 online"; and the
// snapshot before anything is known (what a framework's server side renders).
export { EMPTY_SNAPSHOT, onlineLabel, unreadLabel };

export { STATUS };

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

/** The public face: each call goes to the part it concerns. */
class CommunitySync {
  #options;
  #stopController = new AbortController();
  #requests; // every request, with its token, timeout and abort signals
  #store; // the state machine, the state held, the app's listeners
  #watches; // every tab's watches, and what the leader polls
  #optimistic; // reads, joins and leaves shown before the server does
  #loop; // the fetch loop, run while leading
  #tabs; // the channel, the election, the page's events
  #typingCalls; // typing(): paced PUTs, a DELETE when it ends
  #presence; // presence lists, asked conditionally
  #cleanup = null; // stops listening to the app's signal

  constructor(options = {}) {
    options = clientOptions(options);
    if (options.relayTo) checkRelayTarget(options.relayTo);
    this.#options = options;
    const stopped = this.#stopController.signal;
    const signal = options.signal;
    // Stopped before it started: every call rejects, and nothing is ever sent.
    const stoppedAtStart = signal?.aborted === true;
    if (stoppedAtStart) this.#stopController.abort();
    const requests = new Requests({
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
      getToken: options.getToken,
      stopped,
      requestTimeout: options.requestTimeout,
      onUserChange: () => this.#forgetUser(),
    });
    const tabId = randomId();
    const post = (message) => this.#tabs.post(message);
    const store = new Store({
      tabId,
      overlay: (communities) => this.#optimistic.overlay(communities),
      settle: (communities) => this.#optimistic.settleShown(communities),
      post,
      relayTo: options.relayTo,
      onError: options.onError,
      machine: stoppedAtStart ? transition(initialMachine(), { type: "stop" }) : initialMachine(),
    });
    const inFlight = () => this.#loop.request;
    const watches = new Watches({ store, requests, baseUrl: options.baseUrl, stopped, tabId, post, inFlight });
    const optimistic = new Optimistic({
      store,
      requests,
      options,
      stopped,
      post,
      requestNo: () => this.#loop.requestNo,
      refresh: () => this.#loop.interrupt("refresh"),
      newKey: randomId,
    });
    const loop = new Loop({
      options,
      requests,
      stopped,
      store,
      watches,
      optimistic,
      othersVisible: () => this.#tabs.othersVisible(),
      stepDown: (delay) => this.#tabs.stepDown(delay),
    });
    this.#tabs = new Tabs({ options, requests, stopped, store, watches, optimistic, loop, tabId });
    this.#requests = requests;
    this.#store = store;
    this.#watches = watches;
    this.#optimistic = optimistic;
    this.#loop = loop;
    const calls = { requests, baseUrl: options.baseUrl };
    this.#typingCalls = new Typing({ ...calls, stopped, report: (error) => store.report(error) });
    this.#presence = new Presence(calls);
    if (options.onStatus) store.onStatus(options.onStatus);
    if (stoppedAtStart) return;
    if (signal) {
      const onAbort = () => this.stop();
      signal.addEventListener("abort", onAbort, { once: true });
      this.#cleanup = () => signal.removeEventListener("abort", onAbort);
    }
    // On the server side of a framework there is no page to keep live: the app's
    // calls work, but nothing is polled until the client is created in a browser.
    if (inBrowser()) this.#tabs.start();
  }

  /** The current connection status, one of STATUS. */
  get status() {
    return this.#store.machine.status;
  }

  /**
   * With status `error`: the SyncError the server refused the user with for good
   * (`status` and `problem` attached); null otherwise.
   */
  get error() {
    const { status, error } = this.#store.machine;
    return status === STATUS.ERROR ? error : null;
  }

  /**
   * What a page renders: `{communities, unread, notifications, online, status}`, frozen.
   * The same object until something in it changes, for useSyncExternalStore and the
   * like; a change is announced to subscribe() and onStatus() callbacks.
   */
  getSnapshot() {
    return this.#store.snapshot;
  }

  /** Whether this tab is the one talking to the server. */
  get isLeader() {
    return this.#store.isLeader;
  }

  /** The last known community list, with the joins and leaves still pending. */
  get communities() {
    return this.#store.visible();
  }

  /** Unread notifications (100 means 100 or more), or null from a server that does not count them. */
  get notificationsUnread() {
    return this.#store.state.notificationsUnread;
  }

  /**
   * Members online per community id (`{"c-1": 3}`), as of the last answer, or null from
   * a server that does not count presence.
   */
  get online() {
    return this.#store.state.online;
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
    this.#store.subscribe(subscription);
    if (subscription.watches.length > 0) this.#watches.moved(true);
    return () => {
      if (this.#store.unsubscribe(subscription) && subscription.watches.length > 0) this.#watches.moved(true);
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
    return this.#optimistic.markRead(readKey(communityId), path, notFound);
  }

  /** Mark every notification read (`PUT /me/notifications/read`), like markRead. */
  markNotificationsRead() {
    return this.#optimistic.markRead(readKey(), "/me/notifications/read", "the server keeps no notifications read marker");
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
    const stopListening = this.#store.onTyping(listener);
    return () => {
      stopListening();
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
    return this.#optimistic.changeMembership("join", communityId, joinEntry(communityId, known));
  }

  /**
   * Leave a community (`DELETE /communities/{id}/members/me`), optimistic as join():
   * every tab takes it out of the list at once, until an answer of the polls no
   * longer lists it; resolves with nothing. Refused: every tab shows it again, and the
   * SyncError (kind `leave`) is reported and rejected with.
   */
  leave(communityId) {
    checkCommunityId(communityId);
    return this.#optimistic.changeMembership("leave", communityId, null);
  }

  /** Call `callback(status)` on every status change. Returns an unsubscribe function. */
  onStatus(callback) {
    return this.#store.onStatus(callback);
  }

  /** Ask the server now instead of waiting (for example after the app made a change). */
  refresh() {
    if (this.#store.isLeader) this.#loop.interrupt("refresh");
    else this.#tabs.post({ type: "refresh" });
  }

  /**
   * Start over after `unauthorized`, once the app can produce a valid token. From any
   * tab: a follower asks the leader, and rejoins the election if it had stepped down.
   */
  reconnect() {
    if (this.#stopController.signal.aborted) return;
    if (this.#store.isLeader) {
      this.#loop.interrupt("reconnect");
      return;
    }
    this.#tabs.post({ type: "reconnect" });
    this.#tabs.rejoin();
  }

  /**
   * Stop polling, leave the election (another tab takes over) and close the channel;
   * a typing user stops typing.
   */
  stop() {
    if (this.#stopController.signal.aborted) return;
    this.stopTyping();
    this.#stopController.abort();
    this.#loop.halt();
    this.#watches.stop();
    this.#tabs.stop();
    this.#cleanup?.();
    this.#store.move({ type: "stop" });
  }

  /**
   * Another user's token: the previous user's list, counts, pending reads, joins and
   * leaves, typing and cached presence go before anything is asked for the new one,
   * and a tab that shared the previous user's poll leaves that user's tabs, polling
   * for itself from a fresh snapshot.
   */
  #forgetUser() {
    const store = this.#store;
    const shared = this.#tabs.leave();
    const shownBefore = store.machine.held;
    const before = store.forget();
    this.#optimistic.forget();
    this.#presence.clear();
    this.#watches.forgetRefused();
    this.#typingCalls.reset();
    this.#requests.interruptLoop();
    store.move({ type: "user" });
    store.report(new SyncError("identity", shared ? "the token is for another user: polling for this tab alone" : "the token is for another user: starting over"));
    if (shownBefore) store.emit({ ...followUpdate(before, store.state, { status: "reset", source: "local" }), relayed: false });
    if (shared) this.#tabs.lead();
  }

  /** A read or an edit of one community: `{community, etag}`, or a thrown SyncError. */
  async #community(url, context, request = {}) {
    if (this.#stopController.signal.aborted) throw new SyncError("internal", "the client is stopped");
    return communityResult(await this.#requests.authorized(url, request), context);
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

/** A page or a worker, where there is someone to keep live; not a framework's server side. */
function inBrowser() {
  return (typeof globalThis.window === "object" && globalThis.window !== null) || typeof globalThis.WorkerGlobalScope === "function";
}

function randomId() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}
