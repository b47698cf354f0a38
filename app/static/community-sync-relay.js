/**
 * Parent side of the iframe relay of community-sync.js: a page that embeds an iframe
 * running the client loads only this module.
 *
 *   import { listenForRelay } from "https://sync.example.com/static/community-sync-relay.js";
 *   listenForRelay({ allowedOrigins: ["https://sync.example.com"], source: iframe, onUpdate });
 *
 * No dependencies, no globals.
 */

/** Message tags of updates and statuses relayed from an iframe with postMessage. */
export const RELAY_UPDATE = "community-sync:update";
export const RELAY_STATUS = "community-sync:status";

/** True when a postMessage event is a relayed update or status from an allowed origin. */
export function isAllowedRelayMessage(event, allowedOrigins, types = [RELAY_UPDATE, RELAY_STATUS]) {
  if (!allowedOrigins.includes(event.origin)) return false;
  const data = event.data;
  return data !== null && typeof data === "object" && types.includes(data.type);
}

/**
 * Call `onUpdate(update, event)` for relayed updates (and `onStatus(status, event)` for
 * statuses) posted by `source` from one of `allowedOrigins`. `source` is the iframe
 * element (or its contentWindow) running the client: any other window of an allowed
 * origin (another frame, a popup, this page) could otherwise forge updates. Only
 * `anySource: true` accepts every window of those origins. Returns a function that
 * stops listening.
 */
export function listenForRelay({ allowedOrigins, onUpdate, onStatus, source = null, anySource = false, target = globalThis.window }) {
  if (!Array.isArray(allowedOrigins) || allowedOrigins.length === 0 || allowedOrigins.includes("*")) {
    throw new TypeError("listenForRelay needs a list of explicit allowedOrigins");
  }
  if (source == null && anySource !== true) {
    throw new TypeError("listenForRelay needs the source window (the iframe), or anySource: true");
  }
  // An iframe element's window is read at each message: it exists only once attached.
  const expected = () => (source && "contentWindow" in source ? source.contentWindow : source);
  const onMessage = (event) => {
    if (!isAllowedRelayMessage(event, allowedOrigins)) return;
    if (source != null && event.source !== expected()) return;
    if (event.data.type === RELAY_UPDATE) onUpdate?.(event.data.update, event);
    else onStatus?.(event.data.status, event);
  };
  target.addEventListener("message", onMessage);
  return () => target.removeEventListener("message", onMessage);
}
