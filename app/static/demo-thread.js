// The demo page's topics: one thread of a community (new replies behind a "1 new reply"
// banner, a vote count on each post) and a story followed by a reader who need not be
// a member. Both ride on the page's one poll through sync.watch(). demo.js calls in at
// four points (connect, communities, publishWith, error); everything else is here, but
// for who types in and reads the thread (demo-typing.js).
import { ThreadPeers } from "./demo-typing.js";

const $ = (selector) => document.querySelector(selector);

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((child) => child != null));
  return node;
}

/** "1 new reply", "3 new replies". */
export function newRepliesLabel(count) {
  return count === 1 ? "1 new reply" : `${count} new replies`;
}

/** The thread's first post, the one the panel shows above the replies. */
export function firstPost(thread) {
  return `${thread}.p1`;
}

let made = 0;
/** A fresh id for something the platform creates (a reply, a chapter). */
const freshRef = (prefix) => `${prefix}-${Date.now().toString(36)}${(made += 1)}`;

const clockTime = (at) => (at ? new Date(at) : new Date()).toLocaleTimeString([], { hour12: false });

/** A select's options, replaced only when they differ, so an open dropdown keeps its place. */
export function fillSelect(select, options) {
  const key = JSON.stringify(options);
  if (select.dataset.options === key) return;
  const value = select.value;
  select.replaceChildren(...options.map(([id, label]) => element("option", { value: id, textContent: label })));
  select.dataset.options = key;
  if (options.some(([id]) => id === value)) select.value = value;
}

/**
 * What the thread and the story panels share: a community and an id that name a
 * topic, the watch on it while it is open, and publishing into it as the platform.
 * `name` is the panel's prefix in the page's ids ("thread": #thread-community...),
 * `kind` the first part of its topics ("thread" for "thread:t-1").
 */
class TopicPanel {
  sync = null;
  user = null;
  publisher = null;
  current = null; // {community, id, topic, watch, unwatch} while a topic is open
  names = new Map(); // community id -> name
  mine = new Set(); // ids of the user's communities

  constructor(name, kind) {
    this.name = name;
    this.kind = kind;
    $(`#${name}-form`).addEventListener("submit", (event) => {
      event.preventDefault();
      this.open($(`#${name}-community`).value, $(`#${name}-id`).value.trim());
    });
    $(`#${name}-close`).addEventListener("click", () => this.close());
  }

  /** A new session: close the topic, which was the last user's. */
  connect(sync, user) {
    this.close();
    this.sync = sync;
    this.user = user;
    this.show("");
  }

  /** How to publish into a topic as the platform: `(communityId, body) => Promise`, or null. */
  publishWith(publish) {
    this.publisher = publish;
    for (const button of document.querySelectorAll(`#${this.name}-card [data-platform]`)) button.disabled = !publish;
    if (!publish) this.show("Publishing as the platform needs the admin's token: open this page on the server's own machine.", true, "published");
  }

  /** The user's communities and the public ones, after each answer and directory load. */
  communities(mine, directory) {
    this.names = new Map([...directory, ...mine].map((c) => [c.id, c.name]));
    this.mine = new Set(mine.map((c) => c.id));
    fillSelect($(`#${this.name}-community`), this.choices(mine, directory));
    if (this.current) this.render();
  }

  /** A watch of the panel's topic that the polls leave out (refused, or too many). */
  error(error) {
    if (error.kind === "watch" && this.current && error.watches?.includes(this.current.watch)) this.show(error.message, true);
  }

  open(community, id) {
    if (!this.sync) return this.show("Not connected yet.", true);
    if (!community || !id) return this.show(`Pick a community and a ${this.kind}.`, true);
    const topic = `${this.kind}:${id}`;
    const watch = `${community}/${topic}`;
    const opened = { community, id, topic, watch, unwatch: null };
    try {
      opened.unwatch = this.sync.watch([watch], (change) => this.current === opened && this.arrived(change));
    } catch (error) {
      return this.show(error.message, true); // a malformed id: the client names it
    }
    // Watching the new topic and leaving the old one in the same task: one new poll.
    this.current?.unwatch();
    this.current = opened;
    this.reset();
    this.show("");
    this.render();
    return undefined;
  }

  close() {
    this.current?.unwatch();
    this.current = null;
    this.reset();
    this.render();
  }

  /** Publish `body` into the open topic as the platform would; true once the server took it. */
  async publish(body, where = "published") {
    const current = this.current;
    if (!current) return false;
    if (!this.publisher) {
      this.show("Publishing as the platform needs the admin's token.", true, where);
      return false;
    }
    try {
      await this.publisher(current.community, { topic: current.topic, ...body });
      return true;
    } catch (error) {
      this.show(error.message, true, where);
      return false;
    }
  }

  /** The current user, as the actor of what the platform publishes for them. */
  actor() {
    return this.user?.id ? { actor: this.user.id } : {};
  }

  show(text, isError = false, where = "result") {
    const result = $(`#${this.name}-${where}`);
    result.textContent = text;
    result.classList.toggle("error", isError);
  }

  render() {
    const current = this.current;
    $(`#${this.name}-view`).hidden = !current;
    $(`#${this.name}-close`).hidden = !current;
    $(`#${this.name}-title`).textContent = current ? `${current.topic} · ${this.names.get(current.community) ?? current.community}` : "";
  }
}

/**
 * A thread: its first post, the replies shown, and those that came since behind a
 * banner (as a forum does, so the page does not jump under the reader's eyes).
 */
export class ThreadView extends TopicPanel {
  replies = []; // shown
  pending = []; // arrived, behind the "N new replies" banner
  votes = new Map(); // post ref -> the last count seen
  posted = new Set(); // refs of replies this tab posted: shown at once
  peers = new ThreadPeers(); // who types in the thread, who reads it

  constructor() {
    super("thread", "thread");
    $("#thread-reply").addEventListener("input", () => this.peers.typed());
    $("#thread-new").addEventListener("click", () => {
      this.replies.push(...this.pending);
      this.pending = [];
      this.render();
    });
    $("#thread-posts").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-vote]");
      if (button) this.vote(button.dataset.vote);
    });
    $("#thread-publish-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.reply();
    });
  }

  connect(sync, user) {
    super.connect(sync, user);
    this.peers.connect(sync, user);
  }

  /** The user's communities, then the public ones a visitor may read. */
  choices(mine, directory) {
    return [
      ...mine.map((c) => [c.id, c.name]),
      ...directory.filter((c) => c.is_public && !this.mine.has(c.id)).map((c) => [c.id, `${c.name} (visitor)`]),
    ];
  }

  reset() {
    this.replies = [];
    this.pending = [];
    this.votes = new Map();
    this.posted = new Set();
  }

  arrived(change) {
    if (change.kind === "votes") {
      const votes = change.data?.votes;
      if (Number.isFinite(votes)) this.votes.set(change.ref, votes);
    } else if (change.kind === "reply") {
      if (this.posted.delete(change.ref)) this.replies.push(change);
      else this.pending.push(change);
    }
    this.render();
  }

  async vote(ref) {
    // The platform owns the count: it counts votes in its own tables and publishes the
    // total. The demo has no such tables, so it publishes one more than the count this
    // page last saw (two tabs voting at the same moment both publish the same total).
    // Collapsed: a reader gets only the newest count, never an older one after it.
    const votes = (this.votes.get(ref) ?? 0) + 1;
    if (await this.publish({ kind: "votes", ref, data: { votes }, collapse: true, ...this.actor() }, "result")) {
      this.show(`Voted: published ${votes} for ${ref}.`);
    }
  }

  async reply() {
    if (!this.current) return undefined;
    const input = $("#thread-reply");
    const excerpt = input.value.trim();
    if (!excerpt) return this.show("Write a reply first.", true, "published");
    this.peers.sent();
    const ref = freshRef("r");
    const { topic } = this.current;
    this.posted.add(ref); // before publishing: the poll may bring it back before the answer
    if (await this.publish({ kind: "reply", ref, data: { excerpt }, ...this.actor() })) {
      input.value = "";
      this.show(`Posted reply ${ref} in ${topic}.`, false, "published");
    } else {
      this.posted.delete(ref);
    }
    return undefined;
  }

  render() {
    super.render();
    const current = this.current;
    this.peers.follow(current && { ...current, member: this.mine.has(current.community) });
    if (!current) return;
    const first = firstPost(current.id);
    $("#thread-posts").replaceChildren(
      this.post(first, `The first post of ${current.id} (its text is the platform's).`),
      ...this.replies.map((reply) => this.post(reply.ref, reply.data?.excerpt ?? reply.ref, reply.by, reply.at)),
    );
    const banner = $("#thread-new");
    banner.hidden = this.pending.length === 0;
    banner.textContent = newRepliesLabel(this.pending.length);
  }

  post(ref, text, by = null, at = null) {
    const votes = this.votes.get(ref) ?? 0;
    const vote = element(
      "button",
      { type: "button", className: "vote ghost", title: "Vote (publishes the new count as the platform would)", disabled: !this.publisher },
      element("span", { ariaHidden: "true" }, "▲ "),
      element("span", { className: "votes" }, String(votes)),
    );
    vote.dataset.vote = ref;
    vote.dataset.platform = "";
    vote.setAttribute("aria-label", `Vote for ${ref}: ${votes} so far`);
    const meta = [by ? `by ${by}` : null, at ? clockTime(at) : null].filter(Boolean).join(" · ");
    const item = element(
      "li",
      { className: "post" },
      element("div", { className: "text" }, element("p", {}, text), meta ? element("small", {}, meta) : null),
      vote,
    );
    item.dataset.postId = ref;
    return item;
  }
}

/**
 * A story of a public community, followed by a reader who need not be a member: its
 * chapters come on the page's poll as they are published, and nothing else of that
 * community does (no sidebar row, no unread count, none of its other activity).
 */
export class StoryView extends TopicPanel {
  chapters = [];

  constructor() {
    super("story", "story");
    $("#story-publish-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.chapter();
    });
  }

  /** The public communities, whose topics anyone may follow. */
  choices(mine, directory) {
    return directory.filter((c) => c.is_public).map((c) => [c.id, this.mine.has(c.id) ? `${c.name} (member)` : c.name]);
  }

  reset() {
    this.chapters = [];
  }

  arrived(change) {
    if (change.kind !== "chapter") return;
    this.chapters.push(change);
    this.render();
  }

  async chapter() {
    if (!this.current) return;
    const input = $("#story-chapter");
    const title = input.value.trim() || `Chapter ${this.chapters.length + 1}`;
    const ref = freshRef("ch");
    const { topic } = this.current;
    // The author's platform publishes it: no actor among the demo's readers.
    if (await this.publish({ kind: "chapter", ref, data: { title } })) {
      input.value = "";
      this.show(`Published ${title} (${ref}) in ${topic}.`, false, "published");
    }
  }

  render() {
    super.render();
    const current = this.current;
    if (!current) return;
    const name = this.names.get(current.community) ?? current.community;
    $("#story-how").textContent = this.mine.has(current.community)
      ? `You are a member of ${name}; following the story adds only its chapters.`
      : `You are not a member of ${name}: you follow the story as a visitor, and see nothing else of ${name}.`;
    $("#story-chapters").replaceChildren(
      ...this.chapters.map((chapter) => {
        const item = element(
          "li",
          {},
          element("time", { dateTime: chapter.at ?? "" }, clockTime(chapter.at)),
          element("span", {}, chapter.data?.title ?? chapter.ref),
        );
        item.dataset.ref = chapter.ref;
        return item;
      }),
    );
    $("#story-empty").hidden = this.chapters.length > 0;
  }
}
