/**
 * Types of community-sync-vue.js, the Vue 3 adapter. Written by hand beside the
 * module; docs/client.md describes the behaviour.
 */
import type { ShallowRef } from "vue";

import type { CommunitySync, CommunitySyncOptions, CommunitySyncSnapshot } from "./community-sync.js";

/**
 * A client for the current effect scope (stopped with it): `snapshot` follows its
 * getSnapshot(), `client` makes its calls.
 */
export declare function useCommunitySync(options: CommunitySyncOptions): {
  snapshot: Readonly<ShallowRef<CommunitySyncSnapshot>>;
  client: CommunitySync;
};
