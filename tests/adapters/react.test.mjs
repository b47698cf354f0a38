// The React adapter, as an app that installed the package uses it: a provider, two
// components reading useCommunitySync(), rendered by react-test-renderer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createElement } from "react";
import TestRenderer from "react-test-renderer";

import { CommunitySyncProvider, useCommunitySync, useCommunitySyncClient } from "community-sync-client/react";
import { answers, settle } from "./support.mjs";

const { act } = TestRenderer;

test("components below one provider share one client and render its snapshot", async (t) => {
  const fetch = answers();
  const renders = [];
  const clients = new Set();
  function Sidebar({ name }) {
    const { communities, status } = useCommunitySync();
    clients.add(useCommunitySyncClient());
    renders.push([name, status, communities.map((c) => c.id).join(",")]);
    return null;
  }
  const options = { fetch, getToken: async () => "t", election: "none", baseUrl: "http://api.test" };
  let root;
  await act(async () => {
    root = TestRenderer.create(
      createElement(CommunitySyncProvider, { user: "u-ada", options }, createElement(Sidebar, { name: "a" }), createElement(Sidebar, { name: "b" })),
    );
  });
  t.after(() => act(async () => root.unmount()));
  await settle(() => renders.some(([, status, ids]) => status === "live" && ids === "c-rust"), act);
  assert.equal(fetch.snapshots(), 1, "one client for both components");
  assert.equal([...clients].filter(Boolean).length, 1);
  const before = renders.length;
  // The same snapshot again (an unchanged answer) renders nothing.
  await act(async () => fetch.answer({ status: "unchanged", cursor: "c2", hash: "h1" }));
  await settle(() => fetch.polls() >= 2, act);
  assert.equal(renders.length, before);
  await act(async () => fetch.answer({ status: "changed", cursor: "c3", hash: "h2", communities: [fetch.rust, fetch.go] }));
  await settle(() => renders.filter(([, , ids]) => ids === "c-rust,c-go").length === 2, act);

  const [client] = [...clients].filter(Boolean);
  await act(async () => root.unmount());
  assert.equal(client.status, "stopped");
});

test("another user stops the first user's client and starts one of their own", async (t) => {
  const fetch = answers();
  const seen = [];
  function Probe() {
    seen.push(useCommunitySyncClient());
    return null;
  }
  const options = { fetch, getToken: async () => "t", election: "none", baseUrl: "http://api.test" };
  let root;
  await act(async () => {
    root = TestRenderer.create(createElement(CommunitySyncProvider, { user: "u-ada", options }, createElement(Probe)));
  });
  let mounted = true;
  t.after(() => mounted && act(async () => root.unmount()));
  const ada = seen.findLast(Boolean);
  await act(async () => root.update(createElement(CommunitySyncProvider, { user: "u-bob", options }, createElement(Probe))));
  const bob = seen.findLast(Boolean);
  assert.notEqual(ada, bob);
  assert.equal(ada.status, "stopped");
  await act(async () => root.unmount());
  mounted = false;
  assert.equal(bob.status, "stopped");
});
