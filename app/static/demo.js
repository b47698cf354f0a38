// The live demo page: a sidebar kept current by community-sync.js, plus buttons that
// change memberships and publish activity through the API so the sidebar has
// something to follow.
import { createCommunitySync, unreadLabel } from "./community-sync.js";
import { EditView } from "./demo-edit.js";
import { PresenceView } from "./demo-presence.js";
import { StoryView, ThreadView } from "./demo-thread.js";

const page = document.body.dataset;
const demoMode = page.demoMode === "true";
const apiBase = (page.apiBase ?? "").replace(/\/+$/, "");
const $ = (selector) => document.querySelector(selector);

const STATUS_LABELS = {
  connecting: "Connecting…",
  live: "Live · long poll",
  smart: "Smart polling",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  paused: "Paused (tab hidden)",
  unauthorized: "Unauthorized",
  error: "Refused by the server",
  stopped: "Stopped",
};
const LOG_LINES = 12;
const NOTIFICATIONS_PAGE = 5;

let session = null; // {sync, getToken, user}
let myCommunities = [];
let publicCommunities = [];
let opened = null; // the id of the community open in the "Opened" card
let openedActivity = [];
// communityId -> why the server refused the last join or leave asked in this tab, shown
// in that community's rows until the next try (each answer re-draws the rows).
const refusals = new Map();
const presence = new PresenceView();
const editor = new EditView();
// Topics (demo-thread.js): a thread's replies and votes, a story's chapters.
const topics = [new ThreadView(), new StoryView()];

// --- talking to the API ----------------------------------------------------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", token, body } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`${apiBase}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(data?.detail ?? data?.title ?? `HTTP ${response.status}`, response.status);
  return data;
}

/** Demo mode only: a token source for one demo user that mints and caches tokens. */
function demoTokens(user) {
  let cached = null;
  return async ({ forceRefresh = false } = {}) => {
    if (!forceRefresh && cached && cached.expiresAt - Date.now() > 60_000) return cached.token;
    const minted = await api("/demo/tokens", {
      method: "POST",
      body: { user_id: user.id },
    });
    cached = { token: minted.token, expiresAt: Date.now() + minted.expires_in * 1000 };
    return cached.token;
  };
}

/** The claims of a JWT, unchecked (the server checks it): what the page may read of it. */
function claims(jwt) {
  return JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
}

/**
 * Demo mode on the server's own machine only: the demo admin's token, which the server
 * puts in the page itself (never in /demo/tokens). Renewed by loading the page again.
 */
function embeddedAdminToken() {
  let token = page.adminToken;
  const expiresAt = (jwt) => claims(jwt).exp * 1000;
  return async ({ forceRefresh = false } = {}) => {
    if (forceRefresh || expiresAt(token) - Date.now() < 60_000) {
      const html = await (await fetch(`${apiBase}/`, { cache: "no-store" })).text();
      const fresh = new DOMParser().parseFromString(html, "text/html").body.dataset.adminToken;
      if (!fresh) throw new Error("the server no longer gives this page the admin's token");
      token = fresh;
    }
    return token;
  };
}

// --- rendering -------------------------------------------------------------

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((child) => child != null));
  return node;
}

function avatar(community) {
  return element("span", { className: "avatar", ariaHidden: "true" }, community.name.slice(0, 1).toUpperCase());
}

function renderStatus(status) {
  const badge = $("#status");
  badge.dataset.status = status;
  badge.querySelector(".label").textContent = STATUS_LABELS[status] ?? status;
  const role = $("#tab-role");
  const leader = session?.sync.isLeader ?? false;
  role.dataset.leader = String(leader);
  role.textContent = leader ? "this tab polls the server" : "following the leader tab";
}

/** The server's refusal of the last join or leave of a community, for its row. */
function refusal(communityId) {
  const text = refusals.get(communityId);
  return text ? element("p", { className: "row-error", role: "alert", textContent: text }) : null;
}

function renderMine(fresh = new Set()) {
  const list = $("#my-communities");
  list.replaceChildren(
    ...myCommunities.map((community) => {
      // A join this browser asked for and the server has not confirmed yet: shown, greyed.
      const pending = community.pending === true;
      const leave = element("button", { type: "button", className: "ghost", textContent: "Leave", disabled: pending });
      leave.dataset.leave = community.id;
      leave.addEventListener("click", () => changeMembership(community, "leave"));
      const unread = unreadLabel(community.unread);
      // Two lines beside the avatar: the name with its unread badge, then the role,
      // public or private, and (demo-presence.js) how many are online.
      const open = element(
        "button",
        { type: "button", className: "name", title: "Open (marks its activity read)", disabled: pending },
        element(
          "span",
          { className: "title" },
          element("span", { className: "label" }, community.name),
          element("span", { className: "unread", hidden: unread === "", textContent: unread }),
        ),
        element(
          "small",
          {},
          element("span", { className: "badge" }, pending ? "joining…" : community.role),
          community.is_public ? "public" : "private",
        ),
      );
      open.dataset.open = community.id;
      open.addEventListener("click", () => openCommunity(community.id));
      const classes = [fresh.has(community.id) && "fresh", community.id === opened && "opened", pending && "pending"];
      const item = element(
        "li",
        { className: classes.filter(Boolean).join(" ") },
        avatar(community),
        open,
        leave,
        refusal(community.id),
      );
      item.dataset.communityId = community.id;
      return item;
    }),
  );
  $("#my-count").textContent = String(myCommunities.length);
  $("#my-empty").hidden = myCommunities.length > 0;
  presence.decorate();
  editor.communities(myCommunities);
  renderDirectory();
}

function renderDirectory() {
  const mine = new Map(myCommunities.map((c) => [c.id, c]));
  const list = $("#public-communities");
  list.replaceChildren(
    ...publicCommunities
      .filter((c) => c.is_public)
      .map((community) => {
        const joined = mine.has(community.id);
        const pending = mine.get(community.id)?.pending === true;
        const button = element("button", {
          type: "button",
          className: joined ? "ghost" : "",
          textContent: joined ? "Leave" : "Join",
          disabled: pending,
        });
        button.dataset[joined ? "leave" : "join"] = community.id;
        button.addEventListener("click", () => changeMembership(community, joined ? "leave" : "join"));
        const item = element(
          "li",
          { className: pending ? "pending" : "" },
          avatar(community),
          element("span", { className: "name" }, community.name, element("small", {}, `/${community.slug}`)),
          joined ? element("span", { className: "badge" }, pending ? "joining…" : "joined") : null,
          button,
          refusal(community.id),
        );
        item.dataset.communityId = community.id;
        return item;
      }),
  );
  for (const panel of topics) panel.communities(myCommunities, publicCommunities);
}

function describeChange(change, names) {
  const by = change.by ? ` by ${change.by}` : "";
  const name = names.get(change.community_id) ?? change.community_id;
  switch (change.type) {
    case "activity":
      return `${change.kind} ${change.ref} in ${name}${by}`;
    case "notification":
      return `notification ${change.kind} ${change.ref}${by}`;
    case "read":
      return change.community_id ? `read ${name}` : "read notifications";
    default:
      // A type this page does not know yet (a newer server): its name is enough.
      return change.community_id ? `${change.type} ${name}${by}` : String(change.type);
  }
}

function describeChanges(update) {
  if (update.changes.length > 0) {
    const names = new Map(
      [...publicCommunities, ...update.removed, ...update.communities].map((c) => [c.id, c.name]),
    );
    const text = update.changes.map((change) => describeChange(change, names)).join(", ");
    return update.truncated ? `${text} (older entries dropped)` : text;
  }
  const parts = [
    ...update.added.map((c) => `+${c.name}`),
    ...update.removed.map((c) => `−${c.name}`),
    ...update.updated.map((c) => `~${c.name}`),
  ];
  if (parts.length > 0) return parts.join(", ");
  if (update.status === "unchanged") return "nothing new";
  // Changed, yet nothing here moved: topic activity, which only watches receive
  // (the thread and story panels show theirs).
  if (update.status === "changed" && update.source !== "snapshot") return "topic activity";
  return `${update.communities.length} communities`;
}

/** "14:03:07": the time of day of `at` (an ISO string; now when absent), as the logs show it. */
function clockTime(at) {
  return (at ? new Date(at) : new Date()).toLocaleTimeString([], { hour12: false });
}

function log(kind, status, text) {
  const item = element(
    "li",
    {},
    element("time", {}, clockTime()),
    element("span", { className: "kind" }, status, kind === status ? null : element("small", {}, kind)),
    element("span", {}, text),
  );
  item.dataset.status = status;
  const list = $("#log");
  list.prepend(item);
  while (list.children.length > LOG_LINES) list.lastElementChild.remove();
}

function showResult(text, isError = false, selector = "#admin-result") {
  const result = $(selector);
  result.textContent = text;
  result.classList.toggle("error", isError);
}

// --- opened community and notifications -----------------------------------

function renderOpened() {
  const card = $("#opened");
  const community = myCommunities.find((c) => c.id === opened);
  card.hidden = !community;
  if (!community) return;
  $("#opened-name").textContent = community.name;
  $("#opened-activity").replaceChildren(
    ...openedActivity.map((change) =>
      element("li", {}, element("time", { dateTime: change.at ?? "" }, clockTime(change.at)), element("span", { className: "kind" }, change.kind), element("span", {}, `${change.ref}${change.by ? ` by ${change.by}` : ""}`)),
    ),
  );
}

/** Open a community: what a reader of it does, so its activity counts as read. */
function openCommunity(communityId) {
  if (opened !== communityId) openedActivity = [];
  opened = communityId;
  renderMine();
  renderOpened();
  presence.open(communityId);
  markOpenedRead();
}

function markOpenedRead() {
  if (!session || !opened) return;
  showResult("", false, "#opened-result");
  session.sync.markRead(opened).catch((error) => {
    const text = error.kind === "not-found" ? "This server keeps no read markers (or you left the community)." : error.message;
    showResult(text, true, "#opened-result");
  });
}

function renderNotificationsUnread(count) {
  $("#notifications-unread").textContent = count == null ? "–" : unreadLabel(count) || "0";
  $("#notifications-read").disabled = !(count > 0);
}

let notificationsCursor = null;
let notificationsLoading = null;

/** Load the newest notifications (or, with `older`, the next page) into the sidebar. */
function loadNotifications({ older = false } = {}) {
  const sync = session?.sync;
  if (!sync || notificationsLoading) return notificationsLoading;
  const list = $("#notifications");
  notificationsLoading = (async () => {
    try {
      const page = await sync.notifications({ cursor: older ? notificationsCursor : null, limit: NOTIFICATIONS_PAGE });
      if (sync !== session?.sync) return;
      const items = page.notifications.map((n) =>
        element("li", {}, element("span", { className: "kind" }, n.kind), ` ${n.ref ?? ""}`, n.by ?? n.actor ? element("small", {}, ` by ${n.by ?? n.actor}`) : null),
      );
      if (older) list.append(...items);
      else list.replaceChildren(...items);
      notificationsCursor = page.nextCursor;
      $("#notifications-more").hidden = notificationsCursor == null;
      showResult(list.children.length === 0 ? "No notifications yet." : "", false, "#notifications-result");
    } catch (error) {
      const text = error.kind === "not-found" ? "This server does not list notifications." : `Notifications: ${error.message}`;
      showResult(text, error.kind !== "not-found", "#notifications-result");
    } finally {
      notificationsLoading = null;
    }
  })();
  return notificationsLoading;
}

function markNotificationsRead() {
  session?.sync.markNotificationsRead().catch((error) => showResult(error.message, true, "#notifications-result"));
}

// --- actions ---------------------------------------------------------------

/**
 * Join or leave `community` (an entry of the directory or the sidebar, or `{id}`). The
 * client shows it in every tab of this user at once, before the server answers, and
 * takes it back everywhere if the server refuses; the refusal is reported to every
 * tab's onError (see connect) and, here, kept beside the community's buttons.
 */
async function changeMembership(community, kind) {
  const sync = session?.sync;
  if (!sync) return;
  if (refusals.delete(community.id)) renderMine();
  showResult("", false, "#membership-result");
  try {
    if (kind === "join") {
      const { name, slug, logo_url, is_public } = community;
      await sync.join(community.id, { name, slug, logo_url, is_public });
    } else {
      await sync.leave(community.id);
    }
  } catch (error) {
    if (sync !== session?.sync) return;
    if (error instanceof TypeError) {
      showResult(error.message, true, "#membership-result"); // a malformed id: nothing was sent
      return;
    }
    // Beside the button that was pressed (a last owner's 409 says why she cannot leave).
    refusals.set(community.id, error.problem?.detail ?? error.message);
    renderMine();
  }
}

/** The join-by-id form: a community the directory does not list (a private one, say). */
function joinById() {
  const id = $("#join-id").value.trim();
  if (!id) return;
  changeMembership(publicCommunities.find((c) => c.id === id) ?? { id }, "join");
}

let directoryLoading = null;

function loadDirectory() {
  if (!session) return Promise.resolve();
  directoryLoading ??= (async () => {
    try {
      publicCommunities = (await api("/communities", { token: await session.getToken() })).communities;
      renderDirectory();
    } catch (error) {
      log("communities", "error", error.message);
    } finally {
      directoryLoading = null;
    }
  })();
  return directoryLoading;
}

function connect(user, getToken) {
  session?.sync.stop();
  myCommunities = [];
  opened = null;
  openedActivity = [];
  refusals.clear();
  showResult("", false, "#membership-result");
  notificationsCursor = null;
  $("#notifications").replaceChildren();
  renderNotificationsUnread(null);
  renderMine();
  renderOpened();
  const sync = createCommunitySync({
    baseUrl: apiBase,
    getToken,
    // No channelKey: the client keys its tabs by the token's user, so tabs showing
    // different demo users never share a leader, and checks every token against it.
    backoff: { maxDelay: 8000 },
    onError: (error) => {
      log(error.kind, "error", error.message);
      // Every tab hears of a refused join or leave, which it has just taken back.
      if (error.kind === "join" || error.kind === "leave") showResult(error.message, true, "#membership-result");
      for (const panel of topics) panel.error(error);
    },
  });
  session = { sync, getToken, user };
  presence.connect(sync);
  editor.connect(sync);
  for (const panel of topics) panel.connect(sync, user);
  sync.onStatus(renderStatus);
  sync.subscribe((update) => {
    myCommunities = update.communities;
    if (opened && !myCommunities.some((c) => c.id === opened)) {
      // Left, or removed: nothing more to read there, and nobody to ask who is there.
      opened = null;
      openedActivity = [];
      presence.open(null);
    }
    presence.counts(update.online);
    renderMine(new Set(update.added.map((c) => c.id)));
    renderOpened();
    renderNotificationsUnread(update.notificationsUnread);
    const via = update.relayed ? " (via leader)" : "";
    // The log lists the server's answers: a join or leave just asked for in this browser
    // (status "membership") shows in the sidebar, marked pending, until its answer comes.
    if (update.status !== "membership") log(`${update.source}${via}`, update.status, describeChanges(update));
    const directoryChanged = update.changes.some((c) => c.type.startsWith("community_"));
    if (update.status !== "unchanged" && (directoryChanged || publicCommunities.length === 0)) loadDirectory();
  });
  sync.onChange(
    (change) => {
      if (change.type === "notification") return loadNotifications();
      if (change.community_id !== opened) return undefined;
      // Someone reading the community sees its new activity as it comes.
      openedActivity = [change, ...openedActivity].slice(0, LOG_LINES);
      renderOpened();
      return markOpenedRead();
    },
    { types: ["activity", "notification"] },
  );
  renderStatus(sync.status);
  loadDirectory();
  loadNotifications();
}

// --- admin panel -----------------------------------------------------------

function adminPanel(getAdminToken) {
  const form = $("#admin-form");
  const target = () => ({
    user: $("#admin-user").value.trim(),
    community: $("#admin-community").value,
    role: $("#admin-role").value,
  });

  async function loadCommunities() {
    try {
      const { communities } = await api("/communities", { token: await getAdminToken() });
      for (const select of [$("#admin-community"), $("#platform-community")]) {
        select.replaceChildren(
          ...communities.map((c) => element("option", { value: c.id, textContent: `${c.name}${c.is_public ? "" : " (private)"}` })),
        );
      }
    } catch (error) {
      showResult(`Cannot list communities: ${error.message}`, true);
    }
  }

  async function send(method) {
    const { user, community, role } = target();
    if (!user || !community) return showResult("Pick a user and a community.", true);
    try {
      const path = `/communities/${encodeURIComponent(community)}/members/${encodeURIComponent(user)}`;
      await api(path, { method, token: await getAdminToken(), body: method === "PUT" ? { role } : undefined });
      showResult(method === "PUT" ? `Added ${user} to ${community} as ${role}.` : `Removed ${user} from ${community}.`);
    } catch (error) {
      showResult(error.message, true);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send("PUT");
  });
  $("#admin-remove").addEventListener("click", () => send("DELETE"));
  platformPanel(getAdminToken);
  return { loadCommunities };
}

// --- platform panel ----------------------------------------------------------

let refs = 0;

/** Publishes activity and notifications the way the platform's backend would. */
function platformPanel(getAdminToken) {
  const show = (text, isError = false) => showResult(text, isError, "#platform-result");
  const showSent = (text, isError = false) => showResult(text, isError, "#notify-result");
  // The record one form describes: `form` is "platform" (activity) or "notify".
  const record = (form, prefix) => {
    const ref = $(`#${form}-ref`).value.trim() || `${prefix}-${Date.now().toString(36)}${(refs += 1)}`;
    const actor = $(`#${form}-actor`).value.trim();
    return { kind: $(`#${form}-kind`).value.trim(), ref, ...(actor ? { actor } : {}) };
  };

  async function publish(how) {
    const community = $("#platform-community").value;
    if (!community) return show("Pick a community.", true);
    const body = record("platform", "p");
    try {
      const token = await getAdminToken();
      if (how === "sql") await api("/demo/sql-activity", { method: "POST", token, body: { community_id: community, ...body } });
      else await api(`/communities/${encodeURIComponent(community)}/activity`, { method: "POST", token, body });
      show(`Published ${body.kind} ${body.ref} in ${community} ${how === "sql" ? "from SQL" : "over HTTP"}.`);
    } catch (error) {
      if (error.status === 404 && how === "sql") return show("This server has no /demo/sql-activity (demo mode off, or no activity support).", true);
      show(error.status === 404 ? `${error.message} (unknown community, or a server without activity)` : error.message, true);
    }
    return undefined;
  }

  async function notify() {
    const user = $("#platform-user").value.trim();
    if (!user) return showSent("Pick a user.", true);
    const body = record("notify", "n");
    try {
      await api(`/users/${encodeURIComponent(user)}/notifications`, { method: "POST", token: await getAdminToken(), body });
      showSent(`Sent ${body.kind} ${body.ref} to ${user}.`);
    } catch (error) {
      showSent(error.status === 404 ? `${error.message} (a server without notifications?)` : error.message, true);
    }
    return undefined;
  }

  $("#platform-form").addEventListener("submit", (event) => {
    event.preventDefault();
    publish("http");
  });
  $("#platform-sql").addEventListener("click", () => publish("sql"));
  $("#notify-form").addEventListener("submit", (event) => {
    event.preventDefault();
    notify();
  });
}

/**
 * How the thread and story panels publish into a topic as the platform: from SQL on a
 * demo server (`/demo/sql-activity`, the server's own machine only), else over HTTP
 * with the token in hand (which must then be an admin's).
 */
function topicPublisher(getAdminToken, how) {
  return async (communityId, body) => {
    const token = await getAdminToken();
    if (how === "sql") return api("/demo/sql-activity", { method: "POST", token, body: { community_id: communityId, ...body } });
    return api(`/communities/${encodeURIComponent(communityId)}/activity`, { method: "POST", token, body });
  };
}

// --- start -----------------------------------------------------------------

async function startDemo() {
  const { users } = await api("/demo/users");
  const select = $("#user-select");
  const regular = users.filter((u) => !u.admin);
  select.replaceChildren(...users.map((u) => element("option", { value: u.id, textContent: u.name })));
  for (const target of [$("#admin-user"), $("#platform-user")]) {
    target.replaceChildren(...regular.map((u) => element("option", { value: u.id, textContent: u.name })));
  }

  const wanted = new URLSearchParams(location.search).get("user");
  const pick = (id) => users.find((u) => u.id === id) ?? regular[0] ?? users[0];
  const choose = (user) => {
    select.value = user.id;
    const url = new URL(location.href);
    url.searchParams.set("user", user.id);
    history.replaceState(null, "", url);
    connect(user, demoTokens(user));
  };
  select.addEventListener("change", () => choose(pick(select.value)));
  choose(pick(wanted));

  if (page.adminToken) {
    const adminToken = embeddedAdminToken();
    adminPanel(adminToken).loadCommunities();
    for (const panel of topics) panel.publishWith(topicPublisher(adminToken, "sql"));
  } else {
    for (const panel of topics) panel.publishWith(null);
    showResult("The admin panel acts as the platform admin: open this page on the server's own machine.", true);
    showResult("The platform panel uses the admin's token: open this page on the server's own machine.", true, "#platform-result");
    for (const button of document.querySelectorAll("#platform-form button, #notify-form button")) button.disabled = true;
  }
}

/** The user a pasted token names (`{id, name}`), so the page can tell them from others; null if unreadable. */
function tokenUser(token) {
  try {
    const { sub, name = null } = claims(token);
    return typeof sub === "string" ? { id: sub, name } : null;
  } catch {
    return null;
  }
}

function startWithPastedToken() {
  let token = null;
  const getToken = async () => {
    if (!token) throw new Error("no token pasted yet");
    return token;
  };
  const admin = adminPanel(getToken);
  for (const panel of topics) panel.publishWith(topicPublisher(getToken, "http"));
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("#token-input").value.trim();
    if (!token) return;
    connect(tokenUser(token), getToken);
    admin.loadCommunities();
  });
  renderStatus("stopped");
  $("#tab-role").textContent = "waiting for a token";
}

$("#public-refresh").addEventListener("click", loadDirectory);
$("#join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  joinById();
});
$("#notifications-read").addEventListener("click", markNotificationsRead);
$("#notifications-more").addEventListener("click", () => loadNotifications({ older: true }));
if (demoMode) {
  startDemo().catch((error) => log("demo users", "error", error.message));
} else {
  startWithPastedToken();
}
