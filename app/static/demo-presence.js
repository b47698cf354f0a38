// The demo page's presence: "N online" under each of the sidebar's communities, who
// is here in the opened community, and a switch to hide from everyone. demo.js calls
// in at four points (connect, counts, decorate, open); everything else is here.
import { onlineLabel } from "./community-sync.js";

// How often the opened community's list is asked for (conditionally: a 304 while it
// stays the same), on top of every answer of the sync.
const REFRESH_MS = 5000;

const $ = (selector) => document.querySelector(selector);

export class PresenceView {
  #sync = null;
  #opened = null;
  #online = null;
  #timer = null;

  constructor() {
    $("#presence-visible").addEventListener("change", (event) => this.#setVisible(event.target.checked));
  }

  /** A new session: forget the last user's counts and list, read this user's setting. */
  connect(sync) {
    this.#sync = sync;
    this.#opened = null;
    this.#online = null;
    $("#opened-presence").replaceChildren();
    $("#opened-online").textContent = "";
    const toggle = $("#presence-visible");
    toggle.disabled = true;
    sync
      .presenceVisible()
      .then((visible) => {
        if (sync !== this.#sync) return;
        toggle.checked = visible;
        toggle.disabled = false;
      })
      .catch((error) => this.#show(`Presence: ${error.message}`, true));
    clearInterval(this.#timer);
    this.#timer = setInterval(() => document.visibilityState === "visible" && this.refresh(), REFRESH_MS);
  }

  /** The counts of the latest answer (every answer brings them). */
  counts(online) {
    this.#online = online;
    this.refresh();
  }

  /** Put the counts next to the sidebar's communities (after each render of it). */
  decorate() {
    for (const item of document.querySelectorAll("#my-communities li[data-community-id]")) {
      const count = this.#online?.[item.dataset.communityId];
      const label = onlineLabel(count);
      let badge = item.querySelector(".online");
      if (!badge) {
        // Under the community's name, after "public": the row has no room to spare.
        badge = Object.assign(document.createElement("span"), { className: "online" });
        item.querySelector(".name small")?.append(badge);
      }
      badge.textContent = label;
      badge.hidden = label === "";
    }
  }

  /** The opened community changed (null: none is open): show who is there. */
  open(communityId) {
    if (communityId !== this.#opened) {
      $("#opened-presence").replaceChildren();
      $("#opened-online").textContent = "";
    }
    this.#opened = communityId;
    this.refresh();
  }

  async refresh() {
    const sync = this.#sync;
    const communityId = this.#opened;
    if (!sync || !communityId) return;
    try {
      const { online, users, truncated } = await sync.presence(communityId);
      if (sync !== this.#sync || communityId !== this.#opened) return;
      $("#opened-online").textContent = String(online);
      const items = users.map((user) => {
        const item = document.createElement("li");
        item.dataset.userId = user.id;
        item.textContent = user.name ?? user.id;
        item.title = `online since ${new Date(user.since).toLocaleTimeString([], { hour12: false })}`;
        return item;
      });
      if (truncated) items.push(Object.assign(document.createElement("li"), { className: "more", textContent: `and ${online - users.length} more` }));
      $("#opened-presence").replaceChildren(...items);
    } catch (error) {
      if (sync === this.#sync) this.#show(error.kind === "not-found" ? "" : `Presence: ${error.message}`, error.kind !== "not-found");
    }
  }

  async #setVisible(visible) {
    const sync = this.#sync;
    if (!sync) return;
    try {
      $("#presence-visible").checked = await sync.setPresenceVisible(visible);
      this.#show(visible ? "" : "Hidden: nobody sees you online, in counts or lists.");
    } catch (error) {
      $("#presence-visible").checked = !visible;
      this.#show(`Presence: ${error.message}`, true);
    }
  }

  #show(text, isError = false) {
    const result = $("#presence-result");
    result.textContent = text;
    result.classList.toggle("error", isError);
  }
}
