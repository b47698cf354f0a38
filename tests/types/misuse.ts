// Mistakes the declarations must catch: tsc has to reject exactly the lines marked
// "rejected" (tests/test_client_types.py), so a declaration that lets one through
// (an `any`, a missing option type) fails the test.
import { createCommunitySync } from "community-sync-client";
import { listenForRelay } from "community-sync-client/relay";

const sync = createCommunitySync({
  getToken: async () => "a.jwt.token",
  pollTimeout: "25", // rejected: seconds are a number
  election: "sometimes", // rejected: not an election mode
});
createCommunitySync({ baseUrl: "https://sync.example.com" }); // rejected: getToken is required
sync.markRead(42); // rejected: community ids are strings
sync.onChange((change) => change.role, { types: ["activity"] }); // rejected: activity has no role
sync.subscribe((update) => update.communities[0].unread.toFixed()); // rejected: unread may be absent
const leader: string = sync.isLeader; // rejected: a boolean
sync.watch(["thread:t-9"], () => {}); // rejected: a watch names its community
sync.watch(["c-1/thread:t-9"], (change) => change.data.votes); // rejected: data may be absent
sync.watch(["c-1/*"]); // rejected: watching needs a callback
sync.subscribe(() => {}, { watch: "c-1/*" }); // rejected: a list of watches
listenForRelay({ allowedOrigins: ["https://sync.example.com"] }); // rejected: needs source or anySource
console.log(leader);
