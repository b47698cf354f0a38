/**
 * Types of community-sync-react.js, the React adapter (React 18 and later). Written by
 * hand beside the module; docs/client.md describes the behaviour.
 */
import type { ReactElement, ReactNode } from "react";

import type { CommunitySync, CommunitySyncOptions, CommunitySyncSnapshot } from "./community-sync.js";

export interface CommunitySyncProviderProps {
  /** Whose client: a new user stops the old client and starts one; null or undefined: none. */
  user: string | null | undefined;
  /** Read when the client is created; `channelKey` defaults to `user`. */
  options: CommunitySyncOptions;
  children?: ReactNode;
}

/** Keeps one client per user for the components below it. */
export declare function CommunitySyncProvider(props: CommunitySyncProviderProps): ReactElement;
/** The provider's getSnapshot(); the component renders again only when it changes. */
export declare function useCommunitySync(): CommunitySyncSnapshot;
/** The provider's client, for its calls, or null before it exists (and on the server). */
export declare function useCommunitySyncClient(): CommunitySync | null;
