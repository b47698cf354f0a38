// Who else is in the thread the demo page shows: who is typing in it (this user's
// composer says when they type) and who is reading it, as avatars. Both are shown to
// the community's members only, so the panel asks nothing for a visitor. demo-thread.js
// calls in at four points (connect, follow, typed, sent); everything else is here.

// How often the open thread's readers are asked for (conditionally: a 304 while they
// stay the same), on top of once when the thread opens.
const REFRESH_MS = 5000;

const $ = (selector) => document.querySelector(selector);

/** "Ada is typing…", "Ada and Grace are typing…", "3 people are typing…", "" for nobody. */
export function typingLabel(users) {
  const names = users.map((user) => user.name ?? user.id);
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names.length} people are typing…`;
}

/** "AL" for "Ada Lovelace", "G" for "Grace": what a reader's avatar shows. */
export function initials(name) {
  const words = String(name).trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return "?";
  const letters = words.length === 1 ? [words[0]] : [words[0], words[words.length - 1]];
  return letters.map((word) => [...word][0].toUpperCase()).join("");
}

/**
 * The typing line and the readers' avatars of the open thread. The user is left out
 * of both: the server never lists a user's own typing, and the readers it lists are
 * filtered the same way, so neither shows "you" whatever the timing of the polls.
 */
export class ThreadPeers {
  #sync = null;
  #user = null;
  #current = null; // {community, topic, watch, member} of the open thread, or null
  #untype = null; // ends the onTyping subscription of the open thread
  #timer = null;

  /** A new session: nothing is open yet. */
  connect(sync, user) {
    this.follow(null);
    this.#sync = sync;
    this.#user = user;
  }

  /**
   * The thread the panel shows now (`{community, topic, watch}`, or null), and whether
   * the user is a member of its community (`member`): visitors see neither list.
   */
  follow(current) {
    const same = current && this.#current && current.watch === this.#current.watch && current.member === this.#current.member;
    if (same) return;
    this.#untype?.();
    this.#untype = null;
    clearInterval(this.#timer);
    this.#timer = null;
    this.#current = current;
    this.#showTyping([]);
    this.#showReaders(null);
    if (!current || !current.member || !this.#sync) return;
    // The thread's watch is the panel's own (sync.watch), so this subscription only listens.
    this.#untype = this.#sync.onTyping((typing) => this.#current === current && this.#showTyping(typing[current.watch] ?? []));
    this.#timer = setInterval(() => document.visibilityState === "visible" && this.#refresh(), REFRESH_MS);
    this.#refresh();
  }

  /** A keystroke in the composer: the user types in the open thread. */
  typed() {
    const current = this.#current;
    if (current?.member) this.#sync?.typing(current.community, current.topic);
  }

  /** The reply is sent: the user no longer types. */
  sent() {
    this.#sync?.stopTyping();
  }

  async #refresh() {
    const sync = this.#sync;
    const current = this.#current;
    try {
      const { users } = await sync.readers(current.community, current.topic);
      if (this.#current === current) this.#showReaders(users.filter((user) => user.id !== this.#user?.id));
    } catch {
      // Left the community meanwhile, or a server without readers: nobody to show.
      if (this.#current === current) this.#showReaders(null);
    }
  }

  #showTyping(users) {
    $("#thread-typing").textContent = typingLabel(users);
  }

  /** The readers other than the user; null when there is nothing to say (a visitor, an error). */
  #showReaders(users) {
    $("#thread-readers-line").hidden = users === null;
    $("#thread-readers").replaceChildren(
      ...(users ?? []).map((user) => {
        const name = user.name ?? user.id;
        const item = Object.assign(document.createElement("li"), { className: "reader", title: name, textContent: initials(name) });
        item.setAttribute("aria-label", name);
        item.dataset.userId = user.id;
        return item;
      }),
    );
    $("#thread-readers-none").hidden = (users ?? []).length > 0;
  }
}
