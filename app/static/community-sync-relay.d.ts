/**
 * Types of community-sync-relay.js, the parent side of the iframe relay: a page that
 * embeds an iframe running the client listens for its updates with `listenForRelay`.
 * Written by hand beside the module; docs/client.md describes the behaviour.
 */

import type { CommunitySyncUpdate, Status } from "./community-sync.js";

/** The tag of an update relayed from an iframe with postMessage. */
export declare const RELAY_UPDATE: "community-sync:update";
/** The tag of a status relayed from an iframe with postMessage. */
export declare const RELAY_STATUS: "community-sync:status";

/** What the client in an iframe posts to the window named in its `relayTo` option. */
export type RelayMessage =
  | { type: typeof RELAY_UPDATE; update: CommunitySyncUpdate }
  | { type: typeof RELAY_STATUS; status: Status };

/** The iframe element running the client, or its window. */
export type RelaySource = HTMLIFrameElement | Window | MessageEventSource;

interface RelayListenerOptionsBase {
  /** Explicit origins the relay may come from; `"*"` and an empty list throw. */
  allowedOrigins: readonly string[];
  /** Called for every relayed update. */
  onUpdate?: (update: CommunitySyncUpdate, event: MessageEvent<RelayMessage>) => void;
  /** Called for every relayed status. */
  onStatus?: (status: Status, event: MessageEvent<RelayMessage>) => void;
  /** Where to listen for messages; the page's window by default. */
  target?: Pick<Window, "addEventListener" | "removeEventListener">;
}

/**
 * `source` names the frame running the client (any other window of an allowed origin
 * could forge updates); only `anySource: true` accepts every window of those origins.
 */
export type RelayListenerOptions = RelayListenerOptionsBase &
  ({ source: RelaySource; anySource?: boolean } | { source?: null; anySource: true });

/** True when a postMessage event is a relayed update or status from an allowed origin. */
export declare function isAllowedRelayMessage(
  event: MessageEvent,
  allowedOrigins: readonly string[],
  types?: readonly RelayMessage["type"][],
): event is MessageEvent<RelayMessage>;

/** Listen for relayed updates and statuses; returns a function that stops listening. */
export declare function listenForRelay(options: RelayListenerOptions): () => void;
