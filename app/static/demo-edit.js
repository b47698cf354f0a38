// The demo page's "Edit a community" panel: the community is read with its version
// (sync.getCommunity) and saved only over that version (sync.updateCommunity with
// If-Match), so an edit saved meanwhile in another tab or by another admin is never
// overwritten: the server answers 412, and the panel says what the name is now. demo.js
// calls in at two points (connect, communities); everything else is here.
import { fillSelect } from "./demo-thread.js";

const $ = (selector) => document.querySelector(selector);

export class EditView {
  #sync = null;
  #loaded = null; // {community, etag} as last read or saved

  constructor() {
    $("#edit-pick").addEventListener("submit", (event) => {
      event.preventDefault();
      this.#load($("#edit-community").value);
    });
    $("#edit-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.#save();
    });
    $("#edit-reload").addEventListener("click", () => this.#load(this.#loaded?.community.id));
  }

  /** A new session: nothing is loaded. */
  connect(sync) {
    this.#sync = sync;
    this.#show(null);
    this.#result("");
  }

  /** The user's communities (after each answer): the ones to pick from. */
  communities(mine) {
    const settled = mine.filter((c) => !c.pending);
    fillSelect($("#edit-community"), settled.map((c) => [c.id, `${c.name} (${c.role})`]));
  }

  async #load(communityId) {
    const sync = this.#sync;
    if (!sync || !communityId) return this.#result("Pick a community.", true);
    try {
      const loaded = await sync.getCommunity(communityId);
      if (sync !== this.#sync) return undefined;
      this.#show(loaded);
      this.#result(loaded.etag ? "" : "This page cannot read the community's version (ETag), so it cannot save safely.", !loaded.etag);
    } catch (error) {
      if (sync === this.#sync) this.#result(error.message, true);
    }
    return undefined;
  }

  async #save() {
    const sync = this.#sync;
    const loaded = this.#loaded;
    if (!sync || !loaded?.etag) return undefined;
    const id = loaded.community.id;
    const name = $("#edit-name").value.trim();
    if (!name) return this.#result("A community needs a name.", true);
    $("#edit-save").disabled = true;
    try {
      const saved = await sync.updateCommunity(id, { name }, { ifMatch: loaded.etag });
      if (sync !== this.#sync) return undefined;
      this.#show(saved);
      this.#result(`Saved: the community is now '${saved.community.name}'.`);
    } catch (error) {
      if (sync !== this.#sync) return undefined;
      if (error.kind === "conflict") await this.#conflict(id);
      else if (error.status === 403) this.#result(`Only its admins and owners may edit it: ${error.problem?.detail ?? error.message}`, true);
      else this.#result(error.problem?.detail ?? error.message, true);
    } finally {
      $("#edit-save").disabled = false;
    }
    return undefined;
  }

  /** Another edit came first: say what the community is now, and offer to load it. */
  async #conflict(communityId) {
    let now;
    try {
      now = `now '${(await this.#sync.getCommunity(communityId)).community.name}'`;
    } catch (error) {
      now = `and it cannot be read now (${error.message})`;
    }
    this.#result("");
    $("#edit-conflict-text").textContent = `Someone else changed this community: ${now}. Nothing of yours was saved.`;
    $("#edit-conflict").hidden = false;
  }

  /** The community as read or saved (null: none), its name in the form, no conflict. */
  #show(loaded) {
    this.#loaded = loaded;
    $("#edit-form").hidden = !loaded;
    $("#edit-conflict").hidden = true;
    $("#edit-version").textContent = loaded ? `${loaded.community.id}, version ${loaded.etag ?? "unknown"}` : "";
    if (loaded) $("#edit-name").value = loaded.community.name;
    $("#edit-save").disabled = !loaded?.etag;
  }

  #result(text, isError = false) {
    const result = $("#edit-result");
    result.textContent = text;
    result.classList.toggle("error", isError);
  }
}
