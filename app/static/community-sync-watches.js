/**
 * The watches of community-sync.js across the tabs of one user: each tab declares its
 * own over the channel, the leader polls their union (less what the server refused)
 * and says what it polls, and each tab reports those of its watches left out. Internal:
 * not an entry point of the package.
 */
import {
  MAX_WATCHES,
  SNAPSHOT,
  SyncError,
  communityUrl,
  parseWatch,
  refusedWatches,
  sameWatches,
  uncoveredWatches,
  watchUnion,
  watchedCommunities,
  watchesOn,
} from "./community-sync-decisions.js";

// How long a tab that takes over waits for the other tabs to declare their watches
// again before it forgets those of tabs that did not (closed without saying so).
const WATCH_ROLL_CALL = 3_000;

export class Watches {
  #store;
  #requests;
  #baseUrl;
  #stopped;
  #tabId;
  #post;
  #inFlight;
  // tabId -> {watches, seq} another tab of this user declared. Every tab keeps them, so
  // that one taking over polls them from its first request.
  #others = new Map();
  #seq = 0; // numbers this tab's declarations, to tell which one the leader heard
  // A look at the watches is queued for when the current task is done, and whether
  // this tab's own moved meanwhile: flags of that one batch, not of the client's state.
  #queued = false;
  #ownMoved = false;
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

  /** `post(message)`: tell the other tabs; `inFlight()`: the loop's request in flight, if any. */
  constructor({ store, requests, baseUrl, stopped, tabId, post, inFlight }) {
    this.#store = store;
    this.#requests = requests;
    this.#baseUrl = baseUrl;
    this.#stopped = stopped;
    this.#tabId = tabId;
    this.#post = post;
    this.#inFlight = inFlight;
  }

  /**
   * This tab's watches (`own`) or another tab's moved. Looked at once the current task
   * is done, so that a page declaring many at once sends one message and one poll.
   */
  moved(own) {
    if (own) this.#ownMoved = true;
    if (this.#queued) return;
    this.#queued = true;
    queueMicrotask(() => {
      this.#queued = false;
      if (this.#stopped.aborted) return;
      if (this.#ownMoved) {
        this.#ownMoved = false;
        this.#seq += 1;
        this.announce();
        this.#store.deliverTyping();
      }
      if (this.#store.isLeader) this.#rewatch();
    });
  }

  announce() {
    this.#post({ type: "watch", tabId: this.#tabId, seq: this.#seq, watches: this.#store.declaredWatches() });
  }

  /** Another tab declared its watches. */
  heard(message) {
    if (typeof message.tabId !== "string" || !Array.isArray(message.watches)) return;
    this.#others.set(message.tabId, {
      watches: message.watches.filter((watch) => parseWatch(watch) !== null),
      seq: message.seq,
    });
    this.#rollCall?.add(message.tabId);
    this.moved(false);
  }

  /** The leader said what it polls. */
  heardPolled(message) {
    if (!Array.isArray(message.polled)) return;
    this.#watching = { polled: message.polled, refused: new Map(Array.isArray(message.refused) ? message.refused : []) };
    // Until the leader has heard this tab's latest watches, their absence means nothing.
    if (message.heard?.[this.#tabId] === this.#seq) this.#reportUnpolled();
  }

  /** A tab closed: its watches leave the polls. */
  forgetTab(tabId) {
    if (this.#others.delete(tabId)) this.moved(false);
  }

  /** The channel closed: no other tab's watches are known. */
  forgetOthers() {
    this.#others.clear();
  }

  /** Another user's token: what the server refused was refused to the previous one. */
  forgetRefused() {
    this.#refused.clear();
  }

  /**
   * This tab took over (`shared`: with other tabs): nothing is refused yet, and the
   * watches the other tabs last declared are polled until the roll call ends; those of
   * tabs that do not declare them again within WATCH_ROLL_CALL (they answer the
   * "leader" message) closed without a "bye", and leave the polls.
   */
  takeOver(shared) {
    this.#refused.clear();
    if (!shared) return;
    this.#rollCall = new Set();
    clearTimeout(this.#rollCallTimer);
    this.#rollCallTimer = setTimeout(() => {
      const answered = this.#rollCall;
      this.#rollCall = null;
      if (!this.#store.isLeader || answered === null) return;
      let moved = false;
      for (const tabId of [...this.#others.keys()]) {
        if (!answered.has(tabId)) moved = this.#others.delete(tabId) || moved;
      }
      if (moved) this.moved(false);
    }, WATCH_ROLL_CALL);
  }

  stop() {
    clearTimeout(this.#rollCallTimer);
  }

  /** Every tab's watches: this tab's first, then the others' in the order they were heard. */
  #lists() {
    return [this.#store.declaredWatches(), ...[...this.#others.values()].map((tab) => tab.watches)];
  }

  /** The watches the next poll carries: every tab's, less the refused ones. */
  polled() {
    const lists = this.#lists();
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
    const polled = this.polled();
    const refused = [...this.#refused];
    const heard = Object.fromEntries([...this.#others].map(([tabId, tab]) => [tabId, tab.seq]));
    this.#watching = { polled, refused: new Map(refused) };
    this.#post({ type: "watching", polled, refused, heard });
    this.#reportUnpolled();
    const request = this.#inFlight();
    if (request && request.transport !== SNAPSHOT && !sameWatches(request.watches, polled)) {
      request.rewatched = true;
      this.#requests.interruptLoop();
    }
  }

  /** Report this tab's watches that the polls leave out: each once, until it is polled again. */
  #reportUnpolled() {
    const { polled, refused } = this.#watching;
    const unpolled = uncoveredWatches(this.#store.declaredWatches(), polled);
    this.#unpolledReported = new Set([...this.#unpolledReported].filter((watch) => unpolled.includes(watch)));
    const fresh = unpolled.filter((watch) => !this.#unpolledReported.has(watch));
    for (const watch of fresh) this.#unpolledReported.add(watch);
    const reasons = new Map();
    for (const watch of fresh.filter((watch) => refused.has(watch))) {
      const why = refused.get(watch);
      reasons.set(why, [...(reasons.get(why) ?? []), watch]);
    }
    for (const [why, watches] of reasons) {
      this.#store.report(new SyncError("watch", `the server refuses ${watches.join(", ")}: ${why}`, { watches }));
    }
    const tooMany = fresh.filter((watch) => !refused.has(watch));
    if (tooMany.length > 0) {
      const message = `the tabs of this browser watch more than ${MAX_WATCHES} topics: ${tooMany.join(", ")} not polled`;
      this.#store.report(new SyncError("watch", message, { watches: tooMany }));
    }
  }

  /**
   * The server refused a poll for a watch it carried (`sent`), without saying which. A
   * watch is refused for the reason `GET /communities/{id}` answers 404 (no such
   * community, or a private one the user is not in), so ask that of each watched
   * community, set aside the watches of those it does not show (every watch sent, if
   * it shows them all) and poll again at once without them. Returns false when it is
   * not known yet which one (a community went unanswered).
   */
  async setAside(sent, error) {
    let unknown = new Set();
    if (error.status === 404) {
      const communities = watchedCommunities(sent);
      const shown = await Promise.all(communities.map((id) => this.#communityShown(id)));
      if (this.#stopped.aborted || !this.#store.isLeader) return true;
      unknown = new Set(communities.filter((_, at) => shown[at] === false));
      if (unknown.size === 0 && shown.includes(null)) return false;
    }
    const why = error.problem?.detail || `HTTP ${error.status}`;
    const declared = [...new Set(this.#lists().flat())];
    for (const watch of refusedWatches(sent, unknown, declared)) {
      const { community } = parseWatch(watch);
      this.#refused.set(watch, unknown.has(community) ? `no community ${community} that this user may follow` : why);
    }
    this.#rewatch();
    return true;
  }

  /** Whether the server shows this user a community: true, false (404) or null (no answer). */
  async #communityShown(communityId) {
    const url = communityUrl(this.#baseUrl, communityId);
    try {
      await this.#requests.call("GET", url, `no community ${communityId} for this user`);
      return true;
    } catch (error) {
      return error instanceof SyncError && error.kind === "not-found" ? false : null;
    }
  }

  /** The user joined communities: their refused watches may be polled now. */
  retryRefusedOn(added) {
    if (this.#refused.size === 0 || added.length === 0) return;
    const retried = watchesOn([...this.#refused.keys()], added.map((community) => community.id));
    for (const watch of retried) this.#refused.delete(watch);
    if (retried.length > 0) this.moved(false);
  }
}
