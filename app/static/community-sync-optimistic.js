/**
 * What the app's calls of community-sync.js show before the server does: read markers
 * and joins or leaves, shown at once in every tab of this browser, settled by the
 * answers that show them, rolled back where refused. Each request is sent by the tab
 * it is asked in, leader or not, and every phase is told to the other tabs: so a
 * leader that closes meanwhile loses nothing. Internal: not an entry point of the
 * package.
 */
import {
  SyncError,
  applyRead,
  localReadUpdate,
  maskReads,
  membershipError,
  membershipUrl,
  overlayMemberships,
  settleMemberships,
  settleReads,
  trimSlash,
} from "./community-sync-decisions.js";

export class Optimistic {
  #store;
  #requests;
  #options;
  #stopped;
  #post;
  #requestNo;
  #refresh;
  #newKey;
  // Read markers moved here (or, while leading, in a follower) that the server has not
  // yet confirmed in an answer: masked to 0 in answers until then. See settleReads.
  #pendingReads = new Map();
  // communityId -> a join or leave asked for in this browser that no answer has shown
  // yet: {key, communityId, kind, entry, answered, after, since}. Every tab holds the
  // same ones (the tab that asks tells the others) and shows them on top of the
  // server's list, which the store keeps as the server sent it. The leader settles
  // them (see settleMemberships) and tells the others which it settled; a follower
  // settles by itself only those the list it is relayed shows.
  #memberships = new Map();

  /**
   * `requestNo()`: the number of the loop's last request; `refresh()`: ask the server
   * now; `newKey()`: a key no other tab makes.
   */
  constructor({ store, requests, options, stopped, post, requestNo, refresh, newKey }) {
    this.#store = store;
    this.#requests = requests;
    this.#options = options;
    this.#stopped = stopped;
    this.#post = post;
    this.#requestNo = requestNo;
    this.#refresh = refresh;
    this.#newKey = newKey;
  }

  /** `communities` as this browser shows them: with the pending joins and leaves. */
  overlay(communities) {
    return overlayMemberships(communities, this.#memberships.values());
  }

  /** The pending joins and leaves, for a tab that just joined. */
  list() {
    return [...this.#memberships.values()];
  }

  /** This tab took over: the joins and leaves the server already answered are seen by any request from now on. */
  takeOver() {
    for (const op of this.#memberships.values()) if (op.answered) op.after = this.#requestNo();
  }

  /** Another user's token: nothing of the previous user's is pending. */
  forget() {
    this.#pendingReads = new Map();
    this.#memberships = new Map();
  }

  /**
   * What an answer to request number `requestNo` shows (its `changes`, its list if it
   * has one) settles: returns the keys of the joins and leaves it settled.
   */
  settle(changes, communities, requestNo) {
    const now = Date.now();
    const maxAge = 2 * this.#options.requestTimeout;
    this.#pendingReads = settleReads(this.#pendingReads, { changes, requestNo, now, maxAge });
    const { left, settled } = settleMemberships(this.#memberships, { communities, requestNo, now, maxAge });
    this.#memberships = left;
    return settled;
  }

  /** A list relayed by the leader settles the joins and leaves it shows. */
  settleShown(communities) {
    const settle = { communities, requestNo: -Infinity, now: Date.now(), maxAge: 2 * this.#options.requestTimeout };
    this.#memberships = settleMemberships(this.#memberships, settle).left;
  }

  /** An answer with the reads still pending masked to 0. */
  mask(answer) {
    return maskReads(answer, this.#pendingReads);
  }

  // --- read markers --------------------------------------------------------

  /** Send the PUT of a read marker; the leader is told of each phase. */
  async markRead(key, path, notFound) {
    if (this.#stopped.aborted) throw new SyncError("internal", "the client is stopped");
    this.moveRead(key, "begin");
    let entry;
    try {
      entry = await this.#requests.call("PUT", `${trimSlash(this.#options.baseUrl)}${path}`, notFound);
    } catch (error) {
      this.moveRead(key, "failed");
      throw error;
    }
    this.moveRead(key, "done", isObject(entry) ? entry : null);
    return entry;
  }

  /** A read marker moving (`begin`, `done` or `failed`) here or, when leading, in a follower. */
  moveRead(key, phase, entry = null) {
    if (!this.#store.isLeader) {
      this.#post({ type: "read", key, phase, entry });
      if (phase !== "failed") this.#adoptRead(applyRead(this.#store.state, key, entry));
      return;
    }
    if (phase === "failed") {
      // The server's count is the truth again: ask for it rather than wait a long poll.
      this.#pendingReads.delete(key);
      this.#refresh();
      return;
    }
    // Until the PUT is answered no request is known to see it; then every later one does.
    const after = phase === "begin" ? Infinity : this.#requestNo();
    this.#pendingReads.set(key, { after, since: Date.now() });
    this.#adoptRead(applyRead(this.#store.state, key, entry));
  }

  #adoptRead(state) {
    const held = this.#store.state;
    if (state === held) return;
    const update = localReadUpdate(held, state);
    if (this.#store.isLeader) this.#store.publish(state, update);
    else this.#store.show(state, update);
  }

  // --- joins and leaves ----------------------------------------------------

  /** Send a join (`entry` shown meanwhile) or a leave; every tab is told of each phase. */
  async changeMembership(kind, communityId, entry) {
    if (this.#stopped.aborted) throw new SyncError("internal", "the client is stopped");
    const op = { key: this.#newKey(), communityId, kind, entry };
    this.#moveMembership("begin", op);
    this.#post({ type: "membership", phase: "begin", op });
    const url = membershipUrl(this.#options.baseUrl, communityId);
    let body;
    try {
      body = await this.#requests.call(kind === "join" ? "PUT" : "DELETE", url, `no community ${communityId} this user may ${kind}`);
    } catch (failure) {
      const error = membershipError(kind, communityId, failure);
      this.#moveMembership("failed", op);
      if (this.#stopped.aborted) throw error;
      const { message, status, retryAfter, problem } = error;
      this.#post({ type: "membership", phase: "failed", op, error: { message, status, retryAfter, problem } });
      this.#store.report(error);
      throw error;
    }
    const membership = isObject(body) ? body : null;
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
      const after = this.#store.isLeader ? this.#requestNo() : Infinity;
      const op = { ...held, entry: joined ? { ...held.entry, ...fields } : held.entry, answered: true, after };
      this.#memberships.set(communityId, op);
    } else {
      this.#memberships.delete(communityId);
    }
    this.#store.showMemberships();
  }

  /** A join or leave of another tab, as it told the others. */
  heardMembership({ phase, op, membership = null, error = null }) {
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
      this.#store.report(new SyncError(kind, String(message ?? `could not ${kind} community ${op.communityId}`), { status, retryAfter, problem }));
    }
  }

  /** The ops the leader settled with the answer it relays; returns whether any was held here. */
  settleFromLeader(settled) {
    if (!Array.isArray(settled) || settled.length === 0) return false;
    const keys = new Set(settled);
    let dropped = false;
    for (const [communityId, op] of [...this.#memberships]) {
      if (keys.has(op.key)) dropped = this.#memberships.delete(communityId) || dropped;
    }
    return dropped;
  }

  /** The leader's pending ops, for a tab that just joined: those it does not know yet. */
  learn(ops) {
    if (!Array.isArray(ops)) return;
    for (const op of ops) {
      if (op === null || typeof op !== "object" || this.#memberships.has(op.communityId)) continue;
      this.heardMembership({ phase: "begin", op });
      if (op.answered === true) this.#moveMembership("done", op);
    }
  }
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}
