// Every public name of the client's package, used as an app would: this file must
// type-check under `tsc --strict` (tests/test_client_types.py). It is never run.
import {
  EMPTY_SNAPSHOT,
  RELAY_STATUS,
  RELAY_UPDATE,
  STATUS,
  SyncError,
  createCommunitySync,
  listenForRelay as listenFromClient,
  onlineLabel,
  unreadLabel,
  type ActivityChange,
  type Change,
  type Community,
  type CommunityDetail,
  type CommunityFields,
  type CommunitySync,
  type CommunitySyncOptions,
  type CommunitySyncSnapshot,
  type CommunitySyncUpdate,
  type ETag,
  type EditOptions,
  type JsonValue,
  type KnownCommunity,
  type Membership,
  type MembershipEntry,
  type NotificationEntry,
  type NotificationPage,
  type PresenceList,
  type Problem,
  type Status,
  type TopicActivityChange,
  type TypingMap,
  type TypingUser,
  type UnknownChange,
  type VersionedCommunity,
  type Watch,
  type WatchOptions,
} from "community-sync-client";
import { isAllowedRelayMessage, listenForRelay, type RelayMessage } from "community-sync-client/relay";

declare const myToken: () => Promise<string>;
declare function render(communities: readonly MembershipEntry[], unread: number | null): void;

const controller = new AbortController();
const options: CommunitySyncOptions = {
  getToken: async ({ forceRefresh }) => (forceRefresh ? myToken() : "cached.jwt.token"),
  baseUrl: "https://sync.example.com",
  pollTimeout: 25,
  pollTimeoutGrace: 10_000,
  requestTimeout: 15_000,
  smartInterval: 10_000,
  minLongPollGap: 1_000,
  backoff: { initialDelay: 500, maxDelay: 30_000 },
  loopGuard: { maxRequests: 20, window: 10_000, pause: 60_000 },
  transport: { fallbackAfter: 3, heldFailureAfter: 1_000, retryLongPollAfter: 180_000 },
  pauseWhenHidden: true,
  election: "auto",
  channelKey: "u-ada",
  relayTo: { target: window.parent, targetOrigin: "https://app.example.com" },
  signal: controller.signal,
  onError: (error) => console.warn(error.kind, error.status, error.retryAfter, error.problem?.detail, error.watches),
  onStatus: (status) => console.info(status),
  fetch: (input, init) => fetch(input, init),
};

const sync: CommunitySync = createCommunitySync(options);
const minimal = createCommunitySync({ getToken: () => "a.jwt.token" });
minimal.stop();

const unsubscribe = sync.subscribe((update: CommunitySyncUpdate) => {
  if (update.status === "unchanged") return;
  render(update.communities, update.notificationsUnread);
  for (const entry of [...update.added, ...update.updated]) {
    const badge: string = entry.unread === undefined ? "" : `${entry.unread} new`;
    console.log(entry.id, entry.slug, entry.name, entry.role, entry.logo_url, entry.is_public, entry.joined_at, badge);
  }
  const gone: string[] = update.removed.map((entry) => entry.id);
  const online: number = update.online?.["c-1"] ?? 0;
  const source: "snapshot" | "long-poll" | "smart-poll" | "local" = update.source;
  console.log(gone, online, source, update.truncated, update.relayed, update.serverTime, update.receivedAt);
});

sync.onChange((change: ActivityChange, update) => {
  const where: string = change.community_id;
  console.log(where, change.kind, change.ref, change.by, change.at, update.status);
}, { types: ["activity"] });

sync.onChange((change: Change) => {
  switch (change.type) {
    case "notification":
      return console.log(change.kind, change.ref);
    case "read":
      return console.log(change.community_id ?? "notifications");
    case "activity":
      return console.log(change.community_id, change.kind);
    case "joined":
    case "role_changed":
      return console.log(change.community_id, change.role);
    default:
      // A membership change, or a type this client does not know.
      return console.log(change.type, change.at);
  }
});

// A newer server's change type reaches the app as it came.
sync.onChange((change: Change) => {
  if (change.type === "poll_closed") {
    const unknown: UnknownChange = change as UnknownChange;
    console.log(unknown.type, unknown.at, unknown["poll_id"]);
  }
});

// Topics: a thread's comments and its vote count, every topic of a community.
declare const threadId: string;
const thread: Watch = `c-1/thread:${threadId}`;
const unwatch = sync.watch([thread, "c-2/*"], (change: TopicActivityChange, update) => {
  const topic: string = change.topic;
  const votes: JsonValue | undefined = change.data?.votes;
  if (typeof votes === "number") console.log(change.community_id, topic, change.kind, change.ref, votes.toFixed(), update.relayed);
});
const boardOptions: WatchOptions = { watch: ["c-1/board:b-3"] };
const unsubscribeBoard = sync.subscribe((update) => {
  for (const change of update.changes) {
    if (change.type === "activity" && change.topic !== undefined) console.log(change.topic, change.data ?? {});
  }
}, boardOptions);
sync.onChange((change) => console.log(change.topic ?? "the community", change.data?.title), {
  types: ["activity"],
  watch: [thread],
});
sync.onChange((change) => console.log(change.type), { watch: null });

// A composer: say the user types, show who else does.
declare const composer: HTMLTextAreaElement;
composer.addEventListener("input", () => sync.typing("c-1", `thread:${threadId}`));
composer.form?.addEventListener("submit", () => sync.stopTyping());
const stopTypingNews = sync.onTyping((typing: TypingMap) => {
  const here: readonly TypingUser[] = typing[thread] ?? [];
  console.log(here.map((user) => user.name ?? user.id).join(", "), Object.keys(typing).length);
});
const stopBoardTyping = sync.onTyping((typing) => console.log(typing["c-1/board:b-3"]?.length ?? 0), boardOptions);
sync.subscribe((update) => console.log(update.typing[thread]?.[0]?.id), { watch: [thread] });

// Joining from a public list, leaving, each shown at once and rolled back if refused.
async function membership(community: Community): Promise<void> {
  const known: KnownCommunity = { name: community.name, slug: community.slug, is_public: community.is_public };
  const joined: Membership = await sync.join(community.id, known);
  console.log(joined.user_id, joined.community_id, joined.role, joined.joined_at);
  await sync.join("c-2");
  const pending: boolean = sync.communities.some((entry) => entry.pending === true);
  try {
    const left: void = await sync.leave(community.id);
    console.log(pending, left);
  } catch (error) {
    if (error instanceof SyncError && (error.kind === "leave" || error.kind === "join")) console.log(error.status, error.problem?.type);
  }
}
sync.subscribe((update) => {
  if (update.status === "membership" && update.source === "local") render(update.communities, update.notificationsUnread);
});

const stopWatching = sync.onStatus((status: Status) => {
  if (status === STATUS.UNAUTHORIZED) sync.reconnect();
});

async function app(): Promise<void> {
  // A 204 from the server resolves with null: the entry is there only when it answered one.
  const entry: MembershipEntry | null = await sync.markRead("c-1");
  const read = await sync.markNotificationsRead();
  const notifications_unread: number | null = read?.notifications_unread ?? null;
  const first: NotificationPage = await sync.notifications({ limit: 20 });
  const older = await sync.notifications({ cursor: first.nextCursor, limit: 20 });
  for (const notification of [...first.notifications, ...older.notifications]) {
    const shown: NotificationEntry = notification;
    console.log(shown.kind, shown.ref, shown.by, shown.at, shown.unread);
  }
  const here: PresenceList = await sync.presence("c-1");
  const reading: PresenceList = await sync.readers("c-1", "thread:t-1");
  console.log(here.online, here.truncated, here.users.map((user) => [user.id, user.name, user.since]));
  const visible: boolean = await sync.setPresenceVisible(!(await sync.presenceVisible()));
  console.log(entry?.unread, notifications_unread, visible, await sync.notifications());
}

// An editor: read the version, change it only if nobody else did meanwhile.
async function rename(communityId: string, name: string): Promise<ETag | null> {
  const read: VersionedCommunity<CommunityDetail> = await sync.getCommunity(communityId);
  const { community, etag } = read;
  console.log(community.id, community.slug, community.name, community.logo_url, community.is_public, community.member_count);
  if (etag === null) return null;
  const fields: CommunityFields = { name, logo_url: null };
  const edit: EditOptions = { ifMatch: etag };
  try {
    const saved: VersionedCommunity<Community> = await sync.updateCommunity(communityId, fields, edit);
    return saved.etag;
  } catch (error) {
    if (error instanceof SyncError && error.kind === "conflict") {
      const now: ETag | null = error.currentEtag;
      console.log(error.status, error.problem?.type, now);
      return now;
    }
    throw error;
  }
}
const published = sync.updateCommunity("c-1", { is_public: true, slug: "rust" }, { ifMatch: "*" });
published.then(({ community, etag }) => console.log(community.is_public, etag ?? "no version"));
rename("c-1", "Rust").then((version) => console.log(version));
const conflict = new SyncError("conflict", "community c-1 changed", { status: 412, currentEtag: '"v2"' });
console.log(conflict.currentEtag);

app().catch((error: unknown) => {
  if (error instanceof SyncError && error.kind === "watch") console.log(error.watches?.join(", "));
  if (error instanceof SyncError && error.kind === "not-found") {
    const problem: Problem | null = error.problem;
    console.log(problem?.type, problem?.title, problem?.status, error.message);
  }
});

const failure = new SyncError("http", "HTTP 503", { status: 503, retryAfter: 1_000 });
const statuses: Status[] = Object.values(STATUS);
console.log(sync.status, sync.isLeader, sync.communities.length, sync.notificationsUnread, sync.online, failure, statuses);
sync.refresh();

// The parent page of an iframe that runs the client.
const frame = document.querySelector("iframe");
if (frame) {
  const stopListening = listenForRelay({
    allowedOrigins: ["https://sync.example.com"],
    source: frame,
    onUpdate: (update, event) => {
      if (event.origin === "https://sync.example.com") render(update.communities, update.notificationsUnread);
    },
    onStatus: (status: Status) => console.info(status),
  });
  stopListening();
}
listenFromClient({ allowedOrigins: ["https://sync.example.com"], anySource: true, target: window })();
window.addEventListener("message", (event) => {
  if (!isAllowedRelayMessage(event, ["https://sync.example.com"], [RELAY_UPDATE, RELAY_STATUS])) return;
  const message: RelayMessage = event.data;
  if (message.type === RELAY_UPDATE) render(message.update.communities, null);
  else console.info(message.status);
});

unsubscribe();
unsubscribeBoard();
unwatch();
stopTypingNews();
stopBoardTyping();
membership({ id: "c-3", slug: "go", name: "Go", logo_url: null, is_public: true }).catch(() => {});
stopWatching();
sync.stop();
controller.abort();

// What a page renders, for a framework's store; the labels to render it with.
const snapshot: CommunitySyncSnapshot = sync.getSnapshot();
const same: boolean = snapshot === sync.getSnapshot() && EMPTY_SNAPSHOT.status === "connecting";
for (const community of snapshot.communities) {
  console.log(community.name, unreadLabel(snapshot.unread[community.id]), onlineLabel(snapshot.online?.[community.id]), same);
}
console.log(snapshot.notifications ?? 0, snapshot.status);

// Refused for good, or a token the server keeps refusing.
const refused = createCommunitySync({
  getToken: myToken,
  requestTimeout: undefined,
  onUnauthorized: (error: SyncError) => console.log(error.status, error.problem?.detail),
});
refused.onStatus((status) => {
  if (status === STATUS.ERROR) console.log(refused.error?.status, refused.error?.problem?.title);
});
// The DOM's Notification is still the DOM's in a module that imports the client.
if (typeof Notification !== "undefined") console.log(Notification.permission);
