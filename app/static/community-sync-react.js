/**
 * community-sync for React 18 and later: one client per user, shared by every component
 * below a provider, read through useSyncExternalStore.
 *
 *   import { CommunitySyncProvider, useCommunitySync } from "community-sync-client/react";
 *
 *   <CommunitySyncProvider user={userId} options={{ getToken }}>
 *     <Sidebar />
 *   </CommunitySyncProvider>
 *
 *   function Sidebar() {
 *     const { communities, unread, status } = useCommunitySync();
 *     ...
 *   }
 *
 * The client is created in an effect, so on a framework's server side (and in the
 * first render that hydrates it) components see the empty snapshot, never a request.
 */
import { createContext, createElement, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore } from "react";

import { EMPTY_SNAPSHOT, createCommunitySync } from "./community-sync.js";

const ClientContext = createContext(null);

/**
 * Keeps one client for `user` (created with `options`, `channelKey` defaulting to
 * `user`) and hands it to the components below; a new `user` stops the old client and
 * starts one for the new user, and unmounting stops it. `options` are read when the
 * client is created: changing them later does not restart it.
 */
export function CommunitySyncProvider({ user, options, children }) {
  const [client, setClient] = useState(null);
  const latest = useRef(options);
  latest.current = options;
  useEffect(() => {
    if (user === null || user === undefined) return undefined;
    const created = createCommunitySync({ channelKey: String(user), ...latest.current });
    setClient(created);
    return () => {
      created.stop();
      setClient(null);
    };
  }, [user]);
  return createElement(ClientContext.Provider, { value: client }, children);
}

/** The provider's client, for the calls (`markRead`, `join`...), or null before it exists. */
export function useCommunitySyncClient() {
  return useContext(ClientContext);
}

/**
 * The provider's getSnapshot(): `{communities, unread, notifications, online,
 * status}`. The component renders again when, and only when, that object changes.
 */
export function useCommunitySync() {
  const client = useContext(ClientContext);
  const subscribe = useCallback((changed) => (client === null ? () => {} : listen(client, changed)), [client]);
  const snapshot = useCallback(() => (client === null ? EMPTY_SNAPSHOT : client.getSnapshot()), [client]);
  return useSyncExternalStore(subscribe, snapshot, () => EMPTY_SNAPSHOT);
}

/** Call `changed` on every update and status change; returns what undoes it. */
function listen(client, changed) {
  const unsubscribe = client.subscribe(() => changed());
  const unlisten = client.onStatus(() => changed());
  return () => {
    unsubscribe();
    unlisten();
  };
}
