// The Vue adapter, as an app that installed the package uses it: the composable in an
// effect scope, its shallowRef following getSnapshot(), the client stopped with the scope.
import { test } from "node:test";
import assert from "node:assert/strict";
import { effectScope, watch } from "vue";

import { useCommunitySync } from "community-sync-client/vue";
import { answers, settle } from "./support.mjs";

test("the ref follows the snapshot and the client stops with its scope", async (t) => {
  const fetch = answers();
  const scope = effectScope();
  t.after(() => scope.stop());
  const { snapshot, client } = scope.run(() =>
    useCommunitySync({ fetch, getToken: async () => "t", election: "none", baseUrl: "http://api.test" }),
  );
  const changes = [];
  scope.run(() => watch(snapshot, (value) => changes.push(value), { flush: "sync" }));
  assert.equal(snapshot.value.status, "connecting");
  await settle(() => snapshot.value.status === "live");
  assert.deepEqual(snapshot.value.communities.map((c) => c.id), ["c-rust"]);
  const count = changes.length;
  fetch.answer({ status: "unchanged", cursor: "c2", hash: "h1" });
  await settle(() => fetch.polls() >= 2);
  assert.equal(changes.length, count, "an unchanged answer is no change");
  fetch.answer({ status: "changed", cursor: "c3", hash: "h2", communities: [fetch.rust, fetch.go] });
  await settle(() => snapshot.value.communities.length === 2);
  scope.stop();
  assert.equal(client.status, "stopped");
});
