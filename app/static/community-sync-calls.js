/**
 * Calls of community-sync.js that the app makes and that keep state of their own:
 * typing (paced PUTs, a DELETE when it ends) and presence (lists asked conditionally).
 * Each is sent by the tab it is asked in, through the client's requests. Internal: not
 * an entry point of the package.
 */
import {
  SyncError,
  TYPING_IDLE,
  callResult,
  presenceList,
  presenceUrl,
  typingDelay,
  typingError,
  typingPlace,
  typingRefused,
  typingUrl,
} from "./community-sync-decisions.js";

/**
 * What typing() said last: the place (with `refused` once the server refused it),
 * when the last PUT went, whether a call came since, whether a PUT went since the last
 * DELETE, and the two timers. Requests go one after the other, so a DELETE never
 * overtakes its PUT.
 */
export class Typing {
  #requests;
  #baseUrl;
  #stopped;
  #report;
  #place = null;
  #lastPut = -Infinity;
  #due = false;
  #sent = false;
  #sendTimer = null;
  #idleTimer = null;
  #malformed = null;
  #queue = Promise.resolve();

  constructor({ requests, baseUrl, stopped, report }) {
    this.#requests = requests;
    this.#baseUrl = baseUrl;
    this.#stopped = stopped;
    this.#report = report;
  }

  /** The user types in `topic` of `communityId`; see CommunitySync.typing. */
  typing(communityId, topic) {
    if (this.#stopped.aborted) return;
    const place = typingPlace(communityId, topic);
    if (place === null) {
      const shown = `${quoted(communityId)}, ${quoted(topic)}`;
      if (this.#malformed !== shown) {
        this.#malformed = shown;
        this.#report(new SyncError("typing", `not a place to type in: ${shown} (a community id and one topic)`));
      }
      return;
    }
    clearTimeout(this.#idleTimer);
    this.#idleTimer = setTimeout(() => this.stop(), TYPING_IDLE);
    if (this.#place?.key !== place.key) this.#place = { ...place, refused: false };
    if (this.#place.refused) return;
    this.#due = true;
    this.#pace();
  }

  /** The user stopped typing: `DELETE /me/typing` if a PUT went. */
  stop() {
    this.forget();
    if (!this.#sent) return;
    this.#sent = false;
    this.#send("DELETE", null);
  }

  /** Drop what is pending without a request (another user's token: not theirs to end). */
  forget() {
    clearTimeout(this.#idleTimer);
    clearTimeout(this.#sendTimer);
    this.#place = null;
    this.#due = false;
    this.#idleTimer = null;
    this.#sendTimer = null;
  }

  /** Forget, and that a PUT went: the next user's typing starts from nothing. */
  reset() {
    this.forget();
    this.#sent = false;
  }

  /**
   * Send the PUT typing() asked for if the last one went a second ago or more, else
   * once that second is over, if the user still types by then.
   */
  #pace() {
    if (!this.#due || this.#place === null || this.#sendTimer !== null) return;
    const wait = typingDelay(this.#lastPut, Date.now());
    if (wait > 0) {
      this.#sendTimer = setTimeout(() => {
        this.#sendTimer = null;
        this.#pace();
      }, wait);
      return;
    }
    this.#due = false;
    this.#lastPut = Date.now();
    this.#sent = true;
    this.#send("PUT", this.#place);
  }

  /** Queue a typing request behind the previous one; its failure goes to onError. */
  #send(method, place) {
    const url = typingUrl(this.#baseUrl);
    const payload = place === null ? undefined : { community_id: place.communityId, topic: place.topic };
    const notFound = `no community ${place?.communityId} this user may type in`;
    const send = async () => {
      // stop() sends the DELETE; a PUT still queued behind a slow one need not go.
      if (method === "PUT" && this.#stopped.aborted) return;
      try {
        await this.#requests.call(method, url, notFound, payload, { outlivesStop: method === "DELETE" });
      } catch (error) {
        if (error?.name === "AbortError") return; // stop() cut it short
        // Not asked again while the user types in the same place.
        if (place !== null && typingRefused(error)) place.refused = true;
        this.#report(typingError(method, place, error));
      }
    };
    this.#queue = this.#queue.then(send);
  }
}

/** Presence lists, each asked with the ETag of the one last read: an unchanged list costs the server no body. */
export class Presence {
  #requests;
  #baseUrl;
  #seen = new Map(); // presence URL -> {etag, list}

  constructor({ requests, baseUrl }) {
    this.#requests = requests;
    this.#baseUrl = baseUrl;
  }

  /** `{online, users, truncated}` of a community, or of a topic's readers. */
  async list(communityId, topic) {
    const url = presenceUrl(this.#baseUrl, communityId, topic);
    const seen = this.#seen.get(url);
    const response = await this.#requests.authorized(url, { headers: seen ? { "If-None-Match": seen.etag } : {} });
    if (response.status === 304 && seen) return seen.list;
    const list = presenceList(callResult(response, `not a member of community ${communityId}, or the server keeps no presence`));
    const etag = response.headers.get("ETag");
    if (etag) this.#seen.set(url, { etag, list });
    return list;
  }

  /** Forget every list read (another user's token: theirs are not these). */
  clear() {
    this.#seen.clear();
  }
}

/** A value the app passed, for a message: never throws, whatever it is. */
function quoted(value) {
  try {
    return typeof value === "string" ? JSON.stringify(value) : String(value);
  } catch {
    return typeof value;
  }
}
