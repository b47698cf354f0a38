/**
 * Types of community-sync.js, the browser client. Written by hand beside the module
 * (which has no build step); docs/client.md describes the behaviour and docs/api.md
 * the JSON the shapes below come from. tests/test_client_types.py checks that a
 * program using all of it type-checks under `tsc --strict`.
 */

import type { RelayMessage } from "./community-sync-relay.js";

export { RELAY_STATUS, RELAY_UPDATE, listenForRelay } from "./community-sync-relay.js";
export type { RelayListenerOptions, RelayMessage, RelaySource } from "./community-sync-relay.js";

// ---------------------------------------------------------------------------
// The server's JSON (docs/api.md)
// ---------------------------------------------------------------------------

/** A member's role in a community. */
export type Role = "member" | "moderator" | "admin" | "owner";

/** One of the user's communities, as the snapshot and the polls send it. */
export interface MembershipEntry {
  id: string;
  slug: string;
  name: string;
  logo_url: string | null;
  is_public: boolean;
  role: Role;
  joined_at: string | null;
  /** Activity after the user's read marker, counted up to 100 (100 means "100 or more"); absent from a server without activity. */
  unread?: number;
  /** When the community last had activity; absent from a server without activity. */
  last_activity_at?: string | null;
  /**
   * A join asked for in this browser that no answer of the polls lists yet (`join()`):
   * the entry holds what was known, the id standing in for a missing name and slug.
   * Absent from the server's entries.
   */
  pending?: true;
}

/** A membership, as `PUT /communities/{id}/members/me` answers it (`join()`). */
export interface Membership {
  user_id: string;
  community_id: string;
  role: Role;
  joined_at: string | null;
}

/** What a join may show of a community before the server lists it: anything of a public list's entry. */
export type KnownCommunity = Partial<Pick<Community, "name" | "slug" | "logo_url" | "is_public">>;

/** Someone typing in a topic. */
export interface TypingUser {
  id: string;
  name: string | null;
}

/**
 * Who types in watched topics: one key `"<community_id>/<topic>"` per topic someone
 * types in (never the user), `{}` when nobody does.
 */
export type TypingMap = { readonly [place: Watch]: readonly TypingUser[] | undefined };

interface ChangeBase {
  /** When the change was made (ISO 8601). */
  at: string;
  /** Who made it, or null. */
  by: string | null;
}

/** A membership or a community changed. */
export interface MembershipChange extends ChangeBase {
  type: "joined" | "left" | "role_changed" | "community_updated" | "community_deleted";
  community_id: string;
  /** The new role (`joined`, `role_changed`). */
  role?: Role;
}

/** A JSON value, as the server carries `data`. */
export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** Activity published in a community, or in one of its topics. */
export interface ActivityChange extends ChangeBase {
  type: "activity";
  community_id: string;
  /**
   * The topic inside the community (`"thread:t-9"`); absent for community-level
   * activity. Topic activity reaches only the subscriptions whose watches cover it.
   */
  topic?: string;
  kind: string;
  ref: string;
  /** The publisher's JSON object (at most 512 bytes), verbatim; absent when it gave none. */
  data?: JsonObject;
}

/** Activity of a topic: what `watch` callbacks receive. */
export type TopicActivityChange = ActivityChange & { topic: string };

/** A notification published to the user. */
export interface NotificationChange extends ChangeBase {
  type: "notification";
  kind: string;
  ref: string;
}

/** A read marker moved: a community's, or (no `community_id`) the notifications'. */
export interface ReadChange extends ChangeBase {
  type: "read";
  community_id?: string;
}

/** The change entries this version of the client knows. */
export type KnownChange = MembershipChange | ActivityChange | NotificationChange | ReadChange;
export type ChangeType = KnownChange["type"];

/**
 * A change entry of a type this version does not know: a newer server's, passed on
 * unchanged. Test `type` before reading what a known type carries.
 */
export interface UnknownChange extends ChangeBase {
  type: string;
  [field: string]: unknown;
}

/**
 * A change entry of a poll answer. A newer server may send types not listed here;
 * the client passes them on unchanged, so a `Change` may be an `UnknownChange`.
 */
export type Change = KnownChange | UnknownChange;

/**
 * A topic to watch, `"<community_id>/<topic>"` (`"c-1/thread:t-9"`), or every topic of
 * a community, `"<community_id>/*"`. The topic is 1-64 of `[a-z0-9_.:-]`, starting
 * with a letter; the client checks it when it is declared.
 */
export type Watch = `${string}/${string}`;

/** RFC 9457 problem details, the body of every error answer. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  [extension: string]: unknown;
}

/** A community: what `PATCH /communities/{id}` answers. */
export interface Community {
  id: string;
  slug: string;
  name: string;
  logo_url: string | null;
  is_public: boolean;
}

/** What `GET /communities/{id}` answers: the community and its member count. */
export interface CommunityDetail extends Community {
  member_count: number;
}

/** What an edit may change (`PATCH /communities/{id}`): any of these, checked by the server. */
export interface CommunityFields {
  slug?: string;
  name?: string;
  logo_url?: string | null;
  is_public?: boolean;
}

/**
 * A version, as an `ETag` names it: quotes included (`"3f9a..."`). An edit's `ifMatch`
 * also takes `"*"`: whatever version the community is at. A weak ETag (`W/"..."`) is
 * not one: the server never matches it.
 */
export type ETag = `"${string}"`;

/**
 * One notification of `GET /me/notifications`. Not named `Notification`, which would
 * shadow the DOM's in a module that imports it.
 */
export interface NotificationEntry {
  kind: string;
  ref: string;
  by: string | null;
  at: string;
  unread: boolean;
}

/** The answer of `PUT /me/notifications/read`. */
export interface NotificationsRead {
  notifications_unread: number;
}

/** A member online now. */
export interface OnlineUser {
  id: string;
  name: string | null;
  since: string;
}

// ---------------------------------------------------------------------------
// What the client hands the app
// ---------------------------------------------------------------------------

export declare const STATUS: Readonly<{
  CONNECTING: "connecting";
  LIVE: "live";
  SMART: "smart";
  RECONNECTING: "reconnecting";
  OFFLINE: "offline";
  PAUSED: "paused";
  UNAUTHORIZED: "unauthorized";
  ERROR: "error";
  STOPPED: "stopped";
}>;

/** The connection status (docs/client.md, "Status"). */
export type Status = (typeof STATUS)[keyof typeof STATUS];

/**
 * What a page renders, as `getSnapshot()` gives it: frozen, and the same object until
 * one of its fields changes.
 */
export interface CommunitySyncSnapshot {
  /** The list as shown: the server's, with the joins and leaves still pending. */
  readonly communities: readonly MembershipEntry[];
  /** Unread activity per community id, for the entries that carry a count. */
  readonly unread: Readonly<Record<string, number>>;
  /** Unread notifications (100 means "100 or more"), or null from a server that does not count them. */
  readonly notifications: number | null;
  /** Members online per community id, or null from a server that does not count presence. */
  readonly online: Readonly<Record<string, number>> | null;
  readonly status: Status;
}

/** The snapshot before anything is known, and on a framework's server side. */
export declare const EMPTY_SNAPSHOT: CommunitySyncSnapshot;

/** A label for an unread count: `"3 new"`, `"99+"` from 100, `""` for none. */
export declare function unreadLabel(count: number | null | undefined): string;
/** A label for an online count: `"3 online"`, `""` for none. */
export declare function onlineLabel(count: number | null | undefined): string;

/** What an update answers: a server's poll status, or the client's own. */
export type UpdateStatus = "snapshot" | "changed" | "unchanged" | "reset" | "current" | "read" | "membership";

/** Where an update came from. */
export type UpdateSource = "snapshot" | "long-poll" | "smart-poll" | "local";

/** What subscribers get for every answer. */
export interface CommunitySyncUpdate {
  /** The full list, as in the snapshot. */
  communities: MembershipEntry[];
  /** Communities in this list and not in the previous one. */
  added: MembershipEntry[];
  /** Communities in the previous list and not in this one. */
  removed: MembershipEntry[];
  /** Same id, some field changed. */
  updated: MembershipEntry[];
  /** The server's change entries, in order; [] for snapshots and resets. */
  changes: Change[];
  /** Unread notifications (100 means "100 or more"), or null from a server that does not count them. */
  notificationsUnread: number | null;
  /** Members online per community id, or null from a server that does not count presence. */
  online: Record<string, number> | null;
  /** Who types in the topics of this subscription's watches; `{}` without watches. */
  typing: TypingMap;
  /** The server dropped the oldest activity/notification entries of this answer. */
  truncated: boolean;
  status: UpdateStatus;
  source: UpdateSource;
  /** Another tab made the request. */
  relayed: boolean;
  /** The server's time for the answer (ISO 8601), or null. */
  serverTime: string | null;
  /** When this browser received it (ISO 8601). */
  receivedAt: string;
}

/** One page of notifications, newest first. */
export interface NotificationPage {
  notifications: NotificationEntry[];
  /** Pass back as `cursor` for the next, older page; null after the last. */
  nextCursor: string | null;
  /** The body as received. */
  body: Record<string, unknown>;
}

/** A community and the version it is at: what `getCommunity` and `updateCommunity` resolve with. */
export interface VersionedCommunity<C extends Community = Community> {
  community: C;
  /** What an edit of this version passes as `ifMatch`; null when the answer's ETag did not reach the page. */
  etag: ETag | null;
}

/** Which version an edit applies to. */
export interface EditOptions {
  /** The `etag` of `getCommunity` or of the last edit; `"*"` for whatever version the community is at. */
  ifMatch: ETag | "*";
}

/** Who of a community's members is online now. */
export interface PresenceList {
  /** Every visible member online. */
  online: number;
  /** At most 100, longest online first. */
  users: OnlineUser[];
  /** More are online than `users` names. */
  truncated: boolean;
}

export type SyncErrorKind =
  | "network"
  | "timeout"
  | "http"
  | "token"
  | "unauthorized"
  | "identity"
  | "loop"
  | "internal"
  | "not-found"
  | "watch"
  | "conflict"
  | "typing"
  | "join"
  | "leave";

/**
 * Every failure the client reports (`onError`) or rejects with (`markRead`...). A
 * `412` to `updateCommunity` is `kind: "conflict"`, with `currentEtag`. A failed typing
 * request is reported as `kind: "typing"`; a refused join or leave as `"join"` or
 * `"leave"`, reported and rejected with.
 */
export declare class SyncError extends Error {
  constructor(
    kind: SyncErrorKind,
    message: string,
    details?: {
      status?: number | null;
      retryAfter?: number | null;
      problem?: Problem | null;
      watches?: Watch[] | null;
      currentEtag?: ETag | null;
      cause?: unknown;
    },
  );
  readonly name: "SyncError";
  kind: SyncErrorKind;
  /** The HTTP status, when there was an answer. */
  status: number | null;
  /** Milliseconds the server asked to wait (Retry-After), or null. */
  retryAfter: number | null;
  /** The problem+json body, when there was one. */
  problem: Problem | null;
  /** The watches of this tab that the polls leave out (`kind: "watch"`), else null. */
  watches: Watch[] | null;
  /**
   * `kind: "conflict"`: the version the community is at now (the 412's ETag), null when
   * the answer's ETag did not reach the page; null for every other kind.
   */
  currentEtag: ETag | null;
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/** Retry delays after errors (docs/client.md, "Pacing"). */
export interface BackoffOptions {
  initialDelay: number;
  maxDelay: number;
  multiplier: number;
  maxRetryAfter: number;
}

/** The last line of defence against a fast loop. */
export interface LoopGuardOptions {
  maxRequests: number;
  window: number;
  pause: number;
}

/** When to switch between long and smart polling. */
export interface TransportOptions {
  fallbackAfter: number;
  heldFailureAfter: number;
  retryLongPollAfter: number;
}

/** How the tabs of one user pick the one that polls. */
export type ElectionMode = "auto" | "locks" | "heartbeat" | "none";

/** A window to post every update and status to (an iframe's parent). */
export interface RelayTarget {
  target: { postMessage(message: RelayMessage, targetOrigin: string): void };
  /** An explicit origin; `"*"` throws. */
  targetOrigin: string;
}

export interface CommunitySyncOptions {
  /** A JWT for the user; called before every request, with `forceRefresh: true` once after a 401. */
  getToken: (request: { forceRefresh: boolean }) => string | Promise<string>;
  /** Where the API lives; `""` (same origin) by default. */
  baseUrl?: string;
  /** Whole seconds the server may hold a long poll (25). */
  pollTimeout?: number;
  /** Milliseconds past `pollTimeout` before a held poll counts as lost (10000). */
  pollTimeoutGrace?: number;
  /** Milliseconds for snapshots, smart polls and the app's calls, body included (15000). */
  requestTimeout?: number;
  /** Milliseconds between smart polls when the server sends no X-Poll-Interval (10000). */
  smartInterval?: number;
  /** A long poll answered `unchanged` sooner than this (ms) was not held (1000). */
  minLongPollGap?: number;
  backoff?: Partial<BackoffOptions>;
  loopGuard?: Partial<LoopGuardOptions>;
  transport?: Partial<TransportOptions>;
  /** Stop asking while no tab of this user is visible (true). */
  pauseWhenHidden?: boolean;
  election?: ElectionMode;
  /** Who the tabs belong to; the token's `sub` by default. */
  channelKey?: string | null;
  relayTo?: RelayTarget | null;
  /** Aborting it is `stop()`. */
  signal?: AbortSignal | null;
  onError?: ((error: SyncError) => void) | null;
  onStatus?: ((status: Status) => void) | null;
  /**
   * `401` even with a fresh token (status `unauthorized`): the app may sign the user in
   * again; the client keeps asking, paced, with `getToken({forceRefresh: true})`.
   */
  onUnauthorized?: ((error: SyncError) => void) | null;
  fetch?: typeof fetch | null;
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/** Topics a subscription watches (docs/client.md, "Watching topics"). */
export interface WatchOptions {
  /** At most 20; the leader tab polls every tab's. */
  watch?: readonly Watch[] | null;
}

/** What `createCommunitySync` returns. */
export interface CommunitySync {
  /** The current connection status. */
  readonly status: Status;
  /** With status `error`: why the server refused for good (`status`, `problem`); else null. */
  readonly error: SyncError | null;
  /** Whether this tab is the one talking to the server. */
  readonly isLeader: boolean;
  /** The last known community list. */
  readonly communities: MembershipEntry[];
  /** Unread notifications, or null from a server that does not count them. */
  readonly notificationsUnread: number | null;
  /** Members online per community id, or null from a server that does not count presence. */
  readonly online: Record<string, number> | null;

  /**
   * Call `callback` for every answer (at once with the current state if known); returns
   * an unsubscribe function. `watch` declares topics: the update's `changes` carry their
   * activity, and no other topic's.
   */
  subscribe(callback: (update: CommunitySyncUpdate) => void, options?: WatchOptions): () => void;
  /** Call `callback` for each change entry of the given types; returns an unsubscribe function. */
  onChange<T extends ChangeType>(
    callback: (change: Extract<Change, { type: T }>, update: CommunitySyncUpdate) => void,
    options: { types: readonly T[] } & WatchOptions,
  ): () => void;
  /** Call `callback` for every change entry; returns an unsubscribe function. */
  onChange(callback: (change: Change, update: CommunitySyncUpdate) => void, options?: { types?: null } & WatchOptions): () => void;
  /**
   * Watch topics (at most 20): call `callback` for each activity change of those
   * topics; returns a function that stops watching. Throws a TypeError for a malformed
   * watch or more than 20.
   */
  watch(watches: readonly Watch[], callback: (change: TopicActivityChange, update: CommunitySyncUpdate) => void): () => void;
  /**
   * Call `callback` whenever who types in this tab's watched topics changes (those of
   * `watch` only, if given: declared as `subscribe` does); returns an unsubscribe
   * function.
   */
  onTyping(callback: (typing: TypingMap) => void, options?: WatchOptions): () => void;
  /** Call `callback` on every status change; returns an unsubscribe function. */
  onStatus(callback: (status: Status) => void): () => void;
  /**
   * What a page renders; the same object until something in it changes (announced to
   * `subscribe` and `onStatus` callbacks), for `useSyncExternalStore` and the like.
   */
  getSnapshot(): CommunitySyncSnapshot;

  /** Ask the server now instead of at the next poll. */
  refresh(): void;
  /** Start again at once after `unauthorized` or `error`, from any tab. */
  reconnect(): void;
  /** Stop polling, leave the election and close the channel. */
  stop(): void;

  /**
   * `PUT /me/communities/{id}/read`, optimistic; resolves with the server's entry
   * (`unread: 0`), or null when the answer had no body.
   */
  markRead(communityId: string): Promise<MembershipEntry | null>;
  /** `PUT /me/notifications/read`, optimistic; null when the answer had no body. */
  markNotificationsRead(): Promise<NotificationsRead | null>;
  /** One page of `GET /me/notifications`. */
  notifications(page?: { cursor?: string | null; limit?: number | null }): Promise<NotificationPage>;
  /** `GET /communities/{id}/presence`, asked conditionally. */
  presence(communityId: string): Promise<PresenceList>;
  /** `GET /communities/{id}/presence?topic=`: who is reading the topic, asked conditionally. */
  readers(communityId: string, topic: string): Promise<PresenceList>;
  /** Whether the user shows in presence counts and lists. */
  presenceVisible(): Promise<boolean>;
  /** Show or hide the user everywhere; resolves with the stored choice. */
  setPresenceVisible(visible: boolean): Promise<boolean>;
  /**
   * `GET /communities/{id}`: the community and the version an edit names. Rejects with
   * `not-found` for no such community (or a private one the user is not in).
   */
  getCommunity(communityId: string): Promise<VersionedCommunity<CommunityDetail>>;
  /**
   * `PATCH /communities/{id}` with `If-Match`: changes `fields` only while the community
   * is at the version `ifMatch` names, and resolves with it as changed and its new
   * version. Another edit came first: rejects with a `SyncError` of kind `"conflict"`
   * (`currentEtag`), nothing changed. Throws a TypeError for a malformed id or
   * `ifMatch`, or fields that are not an object.
   */
  updateCommunity(communityId: string, fields: CommunityFields, options: EditOptions): Promise<VersionedCommunity<Community>>;

  /**
   * The user types in `topic` of a community: call it on every keystroke. `PUT
   * /me/typing` at most once a second; no call for 3 s, `stopTyping()` or `stop()` send
   * `DELETE /me/typing`. Never throws: failures go to `onError` (`kind: "typing"`).
   */
  typing(communityId: string, topic: string): void;
  /** The user stopped typing (sent the message): `DELETE /me/typing` if a PUT went. */
  stopTyping(): void;
  /**
   * `PUT /communities/{id}/members/me`, optimistic: every tab lists the community at
   * once (`pending: true`) until the polls do; refused, every tab takes it out again,
   * reports the `SyncError` (`kind: "join"`) and the promise rejects with it.
   */
  join(communityId: string, known?: KnownCommunity): Promise<Membership>;
  /** `DELETE /communities/{id}/members/me`, optimistic as `join` (`kind: "leave"`). */
  leave(communityId: string): Promise<void>;
}

/**
 * Start keeping a user's community list live. Throws a TypeError without `getToken`,
 * with a `relayTo` to `"*"`, or with an option that cannot work (a negative or
 * non-finite duration, an unknown `election`, a `signal` that is not an AbortSignal).
 */
export declare function createCommunitySync(options: CommunitySyncOptions): CommunitySync;
