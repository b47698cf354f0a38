// createCommunitySync's options: an explicit undefined keeps the default, and a value
// that cannot work is refused at creation with a TypeError naming the option.
import { test } from "node:test";
import assert from "node:assert/strict";

import client from "./client.mjs";
import { rust, scriptedFetch, snapshot, start, until } from "./support.mjs";

const { createCommunitySync } = client;
const getToken = async () => "t";

/** Creating a client with `options` throws a TypeError whose message matches `named`. */
function refused(options, named) {
  let sync;
  assert.throws(() => {
    sync = createCommunitySync({ getToken, election: "none", fetch: scriptedFetch([]), ...options });
  }, (error) => error instanceof TypeError && named.test(error.message));
  sync?.stop();
}

test("an option passed as undefined keeps its default", async (t) => {
  const slow = () => new Promise((resolve) => setTimeout(() => resolve(snapshot([rust])), 30));
  const fetch = scriptedFetch([slow]);
  const { sync, errors, updates } = start(fetch, { requestTimeout: undefined, pollTimeout: undefined, backoff: undefined });
  t.after(() => sync.stop());
  await until(() => updates.length > 0 || errors.length > 0);
  assert.deepEqual(errors, []);
  assert.deepEqual(updates.map((update) => update.status), ["snapshot"]);
  const [, poll] = await fetch.untilRequests(2);
  assert.equal(poll.url.searchParams.get("timeout"), "25");
});

for (const [name, value] of [
  ["requestTimeout", -5],
  ["requestTimeout", Number.NaN],
  ["pollTimeoutGrace", Infinity],
  ["smartInterval", "10"],
  ["minLongPollGap", -1],
  ["pollTimeout", -1],
]) {
  test(`${name}: ${String(value)} is refused, the option named`, () => {
    refused({ [name]: value }, new RegExp(name));
  });
}

test("an unknown election is refused", () => {
  refused({ election: "leadr" }, /election/);
});

test("a signal that is not an AbortSignal is refused", () => {
  refused({ signal: { aborted: false } }, /signal must be an AbortSignal/);
});

test("backoff delays are checked too", () => {
  refused({ backoff: { initialDelay: -1 } }, /backoff\.initialDelay/);
});
