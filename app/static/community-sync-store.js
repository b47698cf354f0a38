/**
 * What a tab of community-sync.js holds and shows: the state machine, the last state
 * (answered or relayed by the leader) with what orders it against other tabs', and the
 * app's listeners, each called through isolated() so that an app's bug cannot stop
 * the loop. Internal: not an entry point of the package.
 */
import {
  EMPTY_SNAPSHOT,
  ROLE,
  diffCommunities,
  followUpdate,
  initialMachine,
  initialState,
  isNewerState,
  nextSnapshot,
  sameTyping,
  transition,
  typingFor,
  updateForWatches,
} from "./community-sync-decisions.js";
import { RELAY_STATUS, RELAY_UPDATE } from "./community-sync-relay.js";

export class Store {
  #tabId;
  #overlay;
  #settle;
  #post;
  #relayTo;
  #onError;
  // {status, catchUp, error, role, held, revalidated}: moved only by transition().
  #machine;
  #state = initialState();
  // {from, seq, serverTime} of the state held, to order what leaders relay.
  #heard = null;
  #seq = 0;
  #snapshot = EMPTY_SNAPSHOT; // what getSnapshot() gives, replaced only on a change
  #shown = []; // the list subscribers last received, to tell them what changed
  // {callback, watches}: each subscription receives the topic changes of its own watches.
  #subscribers = new Set();
  #statusListeners = new Set();
  #typingListeners = new Set(); // {callback, watches (null: the tab's), last}

  /**
   * `overlay(communities)`: the list as this browser shows it (the pending joins and
   * leaves on top); `settle(communities)`: drop the pending ones a relayed list shows;
   * `post(message)`: tell the other tabs; `machine`: where it starts.
   */
  constructor({ tabId, overlay, settle, post, relayTo, onError, machine = initialMachine() }) {
    this.#machine = machine;
    this.#tabId = tabId;
    this.#overlay = overlay;
    this.#settle = settle;
    this.#post = post;
    this.#relayTo = relayTo;
    this.#onError = onError;
  }

  get machine() {
    return this.#machine;
  }

  get isLeader() {
    return this.#machine.role === ROLE.LEADER;
  }

  get state() {
    return this.#state;
  }

  get snapshot() {
    return this.#snapshot;
  }

  /** The community list as this browser shows it: the server's, and the pending joins and leaves. */
  visible() {
    return this.#overlay(this.#state.communities);
  }

  /** The state this tab holds, with what orders it against others. */
  stamp() {
    return { from: this.#tabId, seq: this.#seq, state: this.#state };
  }

  /**
   * Move the state machine; on a new status tell the listeners, the parent page and
   * (while leading) the other tabs, which are also told when `announce` says so.
   */
  move(event, { announce = false } = {}) {
    const before = this.#machine.status;
    this.#machine = transition(this.#machine, event);
    const { status } = this.#machine;
    if (this.isLeader && (status !== before || announce)) this.#post({ type: "status", status });
    if (status === before) return;
    this.#renew(this.#machine.held ? this.visible() : []);
    for (const callback of [...this.#statusListeners]) isolated(callback, status);
    this.relay({ type: RELAY_STATUS, status });
  }

  /** A state this tab made (an answer, while leading a read): numbered, told to the other tabs, shown. */
  publish(state, update, extra = {}) {
    this.#state = state;
    this.#seq += 1;
    this.#heard = { from: this.#tabId, seq: this.#seq, serverTime: state.serverTime };
    this.#post({ type: "update", ...this.stamp(), update, ...extra });
    this.emit(update);
  }

  /** The cursor was rejected: the next request revalidates the list held. */
  forgetCursor() {
    this.#state = { ...this.#state, cursor: null };
  }

  /** A state changed here only (a follower's read), shown. */
  show(state, update) {
    this.#state = state;
    this.emit(update);
  }

  /**
   * A state relayed by the leader: adopt it unless it is older than the one held.
   * Returns whether it did (and told the subscribers).
   */
  follow({ from, seq, state }, leaderUpdate) {
    if (!state || typeof state !== "object" || !Array.isArray(state.communities)) return false;
    const incoming = { from, seq, serverTime: state.serverTime };
    if (this.#machine.held && !isNewerState(this.#heard, incoming)) return false;
    const update = followUpdate(this.#state, state, leaderUpdate);
    this.#state = state;
    this.#heard = incoming;
    this.move({ type: "adopt" });
    // What the list shows is settled here too: a leader of an older version settles nothing.
    this.#settle(state.communities);
    this.emit(update);
    return true;
  }

  /** Another user's token: drop the state held; returns the one dropped. */
  forget() {
    const before = this.#state;
    this.#state = initialState();
    this.#heard = null;
    return before;
  }

  /**
   * Hand an update to every subscriber, with the list as this browser shows it and what
   * changed since the list they last received.
   */
  emit(update) {
    const communities = this.visible();
    this.#renew(communities);
    const shown = { ...update, communities, ...diffCommunities(this.#shown, communities) };
    this.#shown = communities;
    for (const { callback, watches } of [...this.#subscribers]) isolated(callback, updateForWatches(shown, watches));
    if (this.#relayTo) this.relay({ type: RELAY_UPDATE, update: updateForWatches(shown, this.declaredWatches()) });
    this.deliverTyping();
  }

  /** Tell the subscribers if the list shown changed, without news from the server. */
  showMemberships() {
    if (!this.#machine.held) return; // the first state shows them
    const { added, removed, updated } = diffCommunities(this.#shown, this.visible());
    if (added.length + removed.length + updated.length === 0) return;
    this.emit({ ...followUpdate(this.#state, this.#state, { status: "membership", source: "local" }), relayed: false });
  }

  /** The snapshot for `communities` (the list shown) and the state held now. */
  #renew(communities) {
    const { notificationsUnread, online } = this.#state;
    this.#snapshot = nextSnapshot(this.#snapshot, { communities, notificationsUnread, online, status: this.#machine.status });
  }

  /** Add a subscription; one made once a state is held gets it at once. */
  subscribe(subscription) {
    this.#subscribers.add(subscription);
    if (!this.#machine.held) return;
    const shown = { ...this.#state, communities: this.visible() };
    const update = updateForWatches({ ...followUpdate({ communities: [] }, shown), relayed: false }, subscription.watches);
    queueMicrotask(() => this.#subscribers.has(subscription) && isolated(subscription.callback, update));
  }

  /** Remove a subscription; returns whether it was there. */
  unsubscribe(subscription) {
    return this.#subscribers.delete(subscription);
  }

  /** This tab's watches, every subscription's, in the order they were declared. */
  declaredWatches() {
    const declared = [];
    for (const { watches } of this.#subscribers) {
      for (const watch of watches) if (!declared.includes(watch)) declared.push(watch);
    }
    return declared;
  }

  onStatus(callback) {
    this.#statusListeners.add(callback);
    return () => this.#statusListeners.delete(callback);
  }

  onTyping(listener) {
    this.#typingListeners.add(listener);
    queueMicrotask(() => this.deliverTyping());
    return () => this.#typingListeners.delete(listener);
  }

  /** Tell each onTyping listener who types in its watched topics, when that changed. */
  deliverTyping() {
    if (this.#typingListeners.size === 0) return;
    const declared = this.declaredWatches();
    for (const listener of [...this.#typingListeners]) {
      const typing = typingFor(this.#state.typing, listener.watches ?? declared);
      if (sameTyping(listener.last, typing) || !this.#typingListeners.has(listener)) continue;
      listener.last = typing;
      isolated(listener.callback, typing);
    }
  }

  report(error) {
    if (this.#onError) isolated(this.#onError, error);
  }

  relay(message) {
    const relay = this.#relayTo;
    if (relay) isolated(() => relay.target.postMessage(message, relay.targetOrigin));
  }
}

/**
 * Call an integrator's callback so that its bug cannot stop the loop: a throw (or a
 * rejected promise) is reported to the page, the way an uncaught error would be, and
 * the client carries on.
 */
export function isolated(callback, ...args) {
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
