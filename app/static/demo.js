// The live demo page: a sidebar kept current by community-sync.js, plus buttons that
// change memberships through the API so the sidebar has something to follow.
import { createCommunitySync } from "./community-sync.js";

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
  stopped: "Stopped",
};
const LOG_LINES = 12;

let session = null; // {sync, getToken, user}
let myCommunities = [];
let publicCommunities = [];

// --- talking to the API ----------------------------------------------------

class ApiError extends Error {}

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
  if (!response.ok) throw new ApiError(data?.detail ?? data?.title ?? `HTTP ${response.status}`);
  return data;
}

/** Demo mode only: a token source for one demo user that mints and caches tokens. */
function demoTokens(user) {
  let cached = null;
  return async ({ forceRefresh = false } = {}) => {
    if (!forceRefresh && cached && cached.expiresAt - Date.now() > 60_000) return cached.token;
    const minted = await api("/demo/tokens", {
      method: "POST",
      body: { user_id: user.id, name: user.name, admin: user.admin },
    });
    cached = { token: minted.token, expiresAt: Date.now() + minted.expires_in * 1000 };
    return cached.token;
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

function renderMine(fresh = new Set()) {
  const list = $("#my-communities");
  list.replaceChildren(
    ...myCommunities.map((community) => {
      const leave = element("button", { type: "button", className: "ghost", textContent: "Leave" });
      leave.dataset.leave = community.id;
      leave.addEventListener("click", () => changeMembership(community.id, "DELETE", leave));
      const item = element(
        "li",
        { className: fresh.has(community.id) ? "fresh" : "" },
        avatar(community),
        element("span", { className: "name" }, community.name, element("small", {}, community.is_public ? "public" : "private")),
        element("span", { className: "badge" }, community.role),
        leave,
      );
      item.dataset.communityId = community.id;
      return item;
    }),
  );
  $("#my-count").textContent = String(myCommunities.length);
  $("#my-empty").hidden = myCommunities.length > 0;
  renderDirectory();
}

function renderDirectory() {
  const mine = new Set(myCommunities.map((c) => c.id));
  const list = $("#public-communities");
  list.replaceChildren(
    ...publicCommunities
      .filter((c) => c.is_public)
      .map((community) => {
        const joined = mine.has(community.id);
        const button = element("button", {
          type: "button",
          className: joined ? "ghost" : "",
          textContent: joined ? "Leave" : "Join",
        });
        button.dataset[joined ? "leave" : "join"] = community.id;
        button.addEventListener("click", () => changeMembership(community.id, joined ? "DELETE" : "PUT", button));
        const item = element(
          "li",
          {},
          avatar(community),
          element("span", { className: "name" }, community.name, element("small", {}, `/${community.slug}`)),
          joined ? element("span", { className: "badge" }, "joined") : null,
          button,
        );
        item.dataset.communityId = community.id;
        return item;
      }),
  );
}

function describeChanges(update) {
  if (update.changes.length > 0) {
    const names = new Map(
      [...publicCommunities, ...update.removed, ...update.communities].map((c) => [c.id, c.name]),
    );
    return update.changes
      .map((change) => {
        const name = names.get(change.community_id) ?? change.community_id;
        return `${change.type} ${name}${change.by ? ` by ${change.by}` : ""}`;
      })
      .join(", ");
  }
  const parts = [
    ...update.added.map((c) => `+${c.name}`),
    ...update.removed.map((c) => `−${c.name}`),
    ...update.updated.map((c) => `~${c.name}`),
  ];
  if (parts.length > 0) return parts.join(", ");
  return update.status === "unchanged" ? "nothing new" : `${update.communities.length} communities`;
}

function log(kind, status, text) {
  const item = element(
    "li",
    {},
    element("time", {}, new Date().toLocaleTimeString([], { hour12: false })),
    element("span", { className: "kind" }, status, kind === status ? null : element("small", {}, kind)),
    element("span", {}, text),
  );
  item.dataset.status = status;
  const list = $("#log");
  list.prepend(item);
  while (list.children.length > LOG_LINES) list.lastElementChild.remove();
}

function showResult(text, isError = false) {
  const result = $("#admin-result");
  result.textContent = text;
  result.classList.toggle("error", isError);
}

// --- actions ---------------------------------------------------------------

async function changeMembership(communityId, method, button) {
  if (!session) return;
  button.disabled = true;
  try {
    const token = await session.getToken();
    await api(`/communities/${encodeURIComponent(communityId)}/members/me`, { method, token });
    // No re-render here: the change comes back through the poll like anyone else's.
  } catch (error) {
    log(method === "PUT" ? "join" : "leave", "error", `${communityId}: ${error.message}`);
    button.disabled = false;
  }
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
  renderMine();
  const sync = createCommunitySync({
    baseUrl: apiBase,
    getToken,
    // Keyed by user, so tabs showing different demo users never share a leader.
    channelKey: user ? `${new URL(apiBase || "/", location.href).href}|${user.id}` : null,
    backoff: { maxDelay: 8000 },
    onError: (error) => log(error.kind, "error", error.message),
  });
  session = { sync, getToken, user };
  sync.onStatus(renderStatus);
  sync.subscribe((update) => {
    myCommunities = update.communities;
    renderMine(new Set(update.added.map((c) => c.id)));
    const via = update.relayed ? " (via leader)" : "";
    log(`${update.source}${via}`, update.status, describeChanges(update));
    const directoryChanged = update.changes.some((c) => c.type.startsWith("community_"));
    if (update.status !== "unchanged" && (directoryChanged || publicCommunities.length === 0)) loadDirectory();
  });
  renderStatus(sync.status);
  loadDirectory();
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
      $("#admin-community").replaceChildren(
        ...communities.map((c) => element("option", { value: c.id, textContent: `${c.name}${c.is_public ? "" : " (private)"}` })),
      );
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
  return { loadCommunities };
}

// --- start -----------------------------------------------------------------

async function startDemo() {
  const { users } = await api("/demo/users");
  const select = $("#user-select");
  const regular = users.filter((u) => !u.admin);
  select.replaceChildren(...users.map((u) => element("option", { value: u.id, textContent: u.name })));
  $("#admin-user").replaceChildren(...regular.map((u) => element("option", { value: u.id, textContent: u.name })));

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

  const admin = users.find((u) => u.admin);
  if (admin) adminPanel(demoTokens(admin)).loadCommunities();
  else showResult("No demo admin configured.", true);
}

function startWithPastedToken() {
  let token = null;
  const getToken = async () => {
    if (!token) throw new Error("no token pasted yet");
    return token;
  };
  const admin = adminPanel(getToken);
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("#token-input").value.trim();
    if (!token) return;
    connect(null, getToken);
    admin.loadCommunities();
  });
  renderStatus("stopped");
  $("#tab-role").textContent = "waiting for a token";
}

$("#public-refresh").addEventListener("click", loadDirectory);
if (demoMode) {
  startDemo().catch((error) => log("demo users", "error", error.message));
} else {
  startWithPastedToken();
}
