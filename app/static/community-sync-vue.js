/**
 * community-sync for Vue 3: a composable whose ref holds the client's getSnapshot().
 *
 *   import { useCommunitySync } from "community-sync-client/vue";
 *
 *   const { snapshot, client } = useCommunitySync({ getToken });
 *   // template: <li v-for="c in snapshot.communities">{{ c.name }}</li>
 *
 * The ref is a shallowRef replaced only when the snapshot changes identity (it is
 * frozen, so deep reactivity would buy nothing). The client stops with the effect
 * scope that created it (the component, or an effectScope), through onScopeDispose.
 * Outside a browser (a framework's server side) the client polls nothing and the ref
 * keeps the empty snapshot.
 */
import { getCurrentScope, onScopeDispose, shallowRef } from "vue";

import { createCommunitySync } from "./community-sync.js";

/** `{snapshot, client}`: a shallowRef of getSnapshot(), and the client for its calls. */
export function useCommunitySync(options) {
  const client = createCommunitySync(options);
  const snapshot = shallowRef(client.getSnapshot());
  const renew = () => {
    snapshot.value = client.getSnapshot();
  };
  const unsubscribe = client.subscribe(renew);
  const unlisten = client.onStatus(renew);
  if (getCurrentScope()) {
    onScopeDispose(() => {
      unsubscribe();
      unlisten();
      client.stop();
    });
  }
  return { snapshot, client };
}
