/**
 * The tabs of one user in community-sync.js: they share a BroadcastChannel, elect one
 * (community-sync-election.js) that talks to the server, and the others follow what it
 * relays. This module keeps the channel, the tab's part in the election (taking over,
 * resigning, stepping down after `unauthorized`) and the page's events, and hands each
 * message to the part it concerns. Internal: not an entry point of the package.
 */
import { ROLE, STATUS, SyncError, asSyncError, channelName, tokenSubject, trimSlash } from "./community-sync-decisions.js";
import { HeartbeatElection, electWithWebLocks, pickElection } from "./community-sync-election.js";
import { pageVisible } from "./community-sync-loop.js";
import { anySignal } from "./community-sync-requests.js";

const READ_PHASES = new Set(["begin", "done", "failed"]);

export class Tabs {
  #options;
  #requests;
  #stopped;
  #store;
  #watches;
  #optimistic;
  #loop;
  #tabId;
  #channel = null;
  #channelName = null;
  #election = "none";
  #electionController = null;
  #rejoinTimer = null;
  #followerVisibility = new Map(); // while leading: tabId -> whether that tab is looked at
  #cleanups = [];

  constructor({ options, requests, stopped, store, watches, optimistic, loop, tabId }) {
    this.#options = options;
    this.#requests = requests;
    this.#stopped = stopped;
    this.#store = store;
    this.#watches = watches;
    this.#optimistic = optimistic;
    this.#loop = loop;
    this.#tabId = tabId;
  }

  /** Join the other tabs of the user, or poll alone; whatever fails, this tab shows live data. */
  start() {
    this.#start().catch((error) => {
      this.#store.report(asSyncError("internal", error));
      this.#pollAlone();
    });
  }

  /** Whether a follower tab says it is looked at. */
  othersVisible() {
    for (const visible of this.#followerVisibility.values()) if (visible) return true;
    return false;
  }

  post(message) {
    try {
      this.#channel?.postMessage(message);
    } catch {
      // A closed channel (tab going away) has no one left to tell.
    }
  }

  /** Rejoin the election after stepping down (reconnect(), or a leader is live again). */
  rejoin() {
    if (this.#store.machine.role === ROLE.STEPPED_DOWN) this.#joinElection();
  }

  /**
   * `unauthorized` while leading: let another tab (whose app may hold a valid token)
   * try. This tab stays out of the queue until reconnect() or until a leader is live
   * again, so tabs that all hold stale tokens do not hand the lock round in a loop.
   * Returns false for a tab that polls alone: there is no other to let.
   */
  stepDown(rejoinAfter) {
    if (this.#election === "none") return false;
    this.#resign();
    this.#store.move({ type: "step-down" });
    this.#leaveElection();
    clearTimeout(this.#rejoinTimer);
    this.#rejoinTimer = setTimeout(() => this.rejoin(), rejoinAfter);
    return true;
  }

  /**
   * Another user's token: a tab that shared the previous user's poll leaves that user's
   * tabs, polling for itself. Returns whether it shared; call lead() once the rest of
   * the previous user's state is gone.
   */
  leave() {
    if (this.#channelName === null) return false;
    this.#leaveElection();
    this.#closeChannel();
    this.#election = "none";
    return true;
  }

  /** This tab talks to the server from now on. */
  lead() {
    if (this.#stopped.aborted || this.#store.isLeader) return;
    this.#followerVisibility.clear();
    this.#watches.takeOver(this.#channel !== null);
    this.#optimistic.takeOver();
    this.post({ type: "leader", tabId: this.#tabId });
    this.#watches.moved(false);
    // Whatever the old leader last said, this tab has no request of its own yet: the
    // other tabs are told so even when the status reads the same.
    this.#store.move({ type: "lead" }, { announce: true });
    this.#loop.start();
  }

  /** Leave the other tabs: the election, the channel and the page's events. */
  stop() {
    clearTimeout(this.#rejoinTimer);
    for (const cleanup of this.#cleanups) cleanup();
    this.post({ type: "bye", tabId: this.#tabId });
    this.#closeChannel();
  }

  async #start() {
    const election = pickElection(this.#options.election);
    this.#listenToPage();
    if (election === "none") return this.#pollAlone();
    let identity = this.#options.channelKey;
    if (identity == null) {
      identity = await this.#subjectAtStart();
      this.#requests.expectUser(identity);
    }
    if (this.#stopped.aborted) return undefined;
    const name = channelName(absoluteUrl(this.#options.baseUrl), identity);
    if (name === null) return this.#pollAlone(); // no identity: nothing may be shared
    try {
      this.#channel = new BroadcastChannel(name);
    } catch {
      return this.#pollAlone();
    }
    this.#channelName = name;
    this.#election = election;
    this.#channel.onmessage = (event) => this.#onMessage(event.data);
    // Ask the leader (if any) for what it knows, so this tab renders at once.
    this.post({ type: "hello", tabId: this.#tabId, visible: pageVisible() });
    this.#watches.announce();
    this.#joinElection();
    return undefined;
  }

  /** The user the tab's token is for, or null (getToken failed, or not a JWT). */
  async #subjectAtStart() {
    try {
      return tokenSubject(await this.#options.getToken({ forceRefresh: false }));
    } catch (error) {
      this.#store.report(new SyncError("token", `getToken failed: ${error?.message ?? error}`, { cause: error }));
      return null;
    }
  }

  #joinElection() {
    if (this.#stopped.aborted || !this.#channelName) return;
    this.#store.move({ type: "queue" });
    this.#leaveElection();
    const controller = new AbortController();
    this.#electionController = controller;
    // Left (or stopped) either way; the stop signal keeps no listener per election joined.
    const signal = anySignal([this.#stopped, controller.signal]);
    const onLeader = () => this.lead();
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
    this.lead();
  }

  #resign() {
    this.#store.move({ type: "resign" });
    this.#loop.halt();
  }

  #closeChannel() {
    try {
      this.#channel?.close();
    } catch {
      // Already closed.
    }
    this.#channel = null;
    this.#channelName = null;
    this.#watches.forgetOthers();
  }

  #listenToPage() {
    const doc = globalThis.document;
    const win = globalThis.window;
    if (doc?.addEventListener) {
      const onVisibility = () => {
        if (this.#store.isLeader) this.#loop.interrupt("visibility");
        else this.post({ type: "visibility", tabId: this.#tabId, visible: pageVisible() });
      };
      doc.addEventListener("visibilitychange", onVisibility);
      this.#cleanups.push(() => doc.removeEventListener("visibilitychange", onVisibility));
    }
    if (win?.addEventListener) {
      const onOnline = () => this.#loop.interrupt("online");
      const onOffline = () => this.#loop.interrupt("offline");
      const onPageHide = () => this.post({ type: "bye", tabId: this.#tabId });
      // Back from the back-forward cache: its "bye" took its watches out of the polls.
      const onPageShow = (event) => event.persisted && this.#watches.announce();
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

  #onMessage(message) {
    if (!message || typeof message !== "object") return;
    const store = this.#store;
    const leading = store.isLeader;
    switch (message.type) {
      case "update": {
        if (leading) return;
        const settled = this.#optimistic.settleFromLeader(message.settled);
        if (!store.follow(message, message.update) && settled) store.showMemberships();
        break;
      }
      case "state":
        if (leading) return;
        this.#optimistic.learn(message.memberships);
        if (!store.follow(message, { status: "current" })) store.showMemberships();
        store.move({ type: "follow", status: message.status });
        break;
      case "status":
        if (leading) return;
        store.move({ type: "follow", status: message.status });
        // Someone leads successfully: queue up again to take over when that tab closes.
        if (message.status === STATUS.LIVE || message.status === STATUS.SMART) this.rejoin();
        break;
      case "hello":
        if (!leading) return;
        this.#followerVisibility.set(message.tabId, message.visible);
        if (store.machine.held) this.post({ type: "state", ...store.stamp(), status: store.machine.status, memberships: this.#optimistic.list() });
        else this.post({ type: "status", status: store.machine.status });
        this.#loop.interrupt("visibility");
        break;
      case "leader":
        // A new leader took over: tell it whether this tab is being looked at, and what it watches.
        if (leading) return;
        this.post({ type: "visibility", tabId: this.#tabId, visible: pageVisible() });
        this.#watches.announce();
        break;
      case "visibility":
        if (!leading) return;
        this.#followerVisibility.set(message.tabId, message.visible);
        this.#loop.interrupt("visibility");
        break;
      case "bye":
        if (leading) this.#followerVisibility.delete(message.tabId);
        this.#watches.forgetTab(message.tabId);
        break;
      case "watch":
        this.#watches.heard(message);
        break;
      case "watching":
        if (!leading) this.#watches.heardPolled(message);
        break;
      case "refresh":
        if (leading) this.#loop.interrupt("refresh");
        break;
      case "reconnect":
        if (leading) this.#loop.interrupt("reconnect");
        break;
      case "membership":
        this.#optimistic.heardMembership(message);
        break;
      case "read":
        if (leading && typeof message.key === "string" && READ_PHASES.has(message.phase)) {
          const entry = message.entry !== null && typeof message.entry === "object" ? message.entry : null;
          this.#optimistic.moveRead(message.key, message.phase, entry);
        }
        break;
    }
  }
}

function absoluteUrl(baseUrl) {
  const here = globalThis.location?.href;
  try {
    return trimSlash(new URL(baseUrl || "/", here).href);
  } catch {
    return trimSlash(baseUrl);
  }
}
