/**
 * How the tabs of one user pick the one that polls (community-sync.js imports it): a
 * Web Lock held while the tab lives, or, only when asked for, a heartbeat over
 * localStorage, kept visibly separate. Internal: not an entry point of the package.
 */

/**
 * Web Locks election. The leader holds the lock by returning a promise that does not
 * settle while the tab lives, so when the tab closes the browser hands the lock to the
 * next queued tab at once. Aborting `signal` leaves the queue or releases the lock.
 */
export function electWithWebLocks(name, { onLeader, onUnavailable, signal }) {
  let release = () => {};
  const held = new Promise((resolve) => {
    release = resolve;
  });
  signal.addEventListener("abort", () => release(), { once: true });
  const denied = (error) => {
    // Sandboxed frames and blocked storage get a SecurityError ("The request was
    // denied"): this tab cannot coordinate with others.
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
 * Heartbeat election over localStorage, only when asked for (`election: "heartbeat"`):
 * for plain-http origins, where Web Locks do not exist. The leader writes `{id,
 * expires}` every `interval`; a tab that finds the entry missing or expired claims it,
 * waits a beat and leads only if its claim survived, since two tabs can claim in the
 * same instant. Slower to hand over than a lock (up to `ttl`), and browsers throttle
 * timers in hidden tabs, so two leaders for a moment are possible.
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
    signal.addEventListener("abort", this.release, { once: true });
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
      // If our timer slipped past the ttl another tab may have claimed the entry. Two
      // leaders poll twice, so step down.
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

/** "locks", "heartbeat" or "none" (this tab polls alone). */
export function pickElection(preference) {
  const hasLocks = typeof navigator !== "undefined" && typeof navigator.locks?.request === "function";
  if (preference === "none" || typeof BroadcastChannel !== "function") return "none";
  if (preference === "heartbeat") return storageUsable() ? "heartbeat" : "none";
  // "auto" and "locks": Web Locks exist in every current browser, in secure contexts
  // (https, localhost). Elsewhere each tab polls for itself rather than trust timers.
  return hasLocks ? "locks" : "none";
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
