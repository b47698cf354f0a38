// The React and Vue adapters as an app that installed the package uses them: must
// type-check under `tsc --strict` with React's and Vue's own types
// (tests/test_client_package.py). It is never run.
import { createElement } from "react";
import { computed } from "vue";

import { unreadLabel, type CommunitySyncSnapshot } from "community-sync-client";
import { CommunitySyncProvider, useCommunitySync, useCommunitySyncClient } from "community-sync-client/react";
import { useCommunitySync as useVueSync } from "community-sync-client/vue";

declare const getToken: () => Promise<string>;

function Sidebar() {
  const { communities, unread, status }: CommunitySyncSnapshot = useCommunitySync();
  const client = useCommunitySyncClient();
  return createElement(
    "ul",
    { "data-status": status },
    communities.map((community) =>
      createElement("li", { key: community.id, onClick: () => client?.markRead(community.id) }, community.name, unreadLabel(unread[community.id])),
    ),
  );
}

export const app = createElement(CommunitySyncProvider, { user: "u-ada", options: { getToken } }, createElement(Sidebar));

export function setup() {
  const { snapshot, client } = useVueSync({ getToken });
  const names = computed(() => snapshot.value.communities.map((community) => community.name));
  return { names, join: (id: string) => client.join(id) };
}
