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
sync.updateCommunity("c-1", { name: "Rust" }); // rejected: an edit names the version it changes
sync.updateCommunity("c-1", { name: "Rust" }, {}); // rejected: ifMatch is required
sync.updateCommunity("c-1", { name: "Rust" }, { ifMatch: 'W/"v1"' }); // rejected: a weak ETag never matches
sync.updateCommunity("c-1", { name: "Rust" }, { ifMatch: "v1" }); // rejected: an ETag keeps its quotes
sync.updateCommunity("c-1", { title: "Rust" }, { ifMatch: "*" }); // rejected: not a community field
sync.updateCommunity("c-1", { is_public: "yes" }, { ifMatch: "*" }); // rejected: a boolean
sync.getCommunity("c-1").then(({ etag }) => sync.updateCommunity("c-1", {}, { ifMatch: etag })); // rejected: etag may be null
sync.getCommunity("c-1").then(({ community }) => community.member_count.toFixed(community.members)); // rejected: no such field
sync.updateCommunity("c-1", {}, { ifMatch: "*" }).then(({ community }) => community.member_count); // rejected: an edit answers no member_count
sync.typing("c-1"); // rejected: typing names its topic
const typed: boolean = sync.typing("c-1", "thread:t-9"); // rejected: typing returns nothing
sync.onTyping((typing) => typing["c-1/thread:t-9"].length); // rejected: nobody may be typing there
sync.onTyping((typing) => typing["thread:t-9"]); // rejected: a key names its community
sync.join("c-1", { title: "Go" }); // rejected: not a community field
sync.join("c-1").then((membership) => membership.unread); // rejected: a membership has no unread count
sync.leave("c-1").then((membership) => membership.role); // rejected: leave resolves with nothing
sync.markRead("c-1").then((entry) => entry.unread); // rejected: a 204 resolves with null
sync.getSnapshot().communities.push(sync.communities[0]); // rejected: the snapshot is read-only
const status: "live" | "stopped" = sync.status; // rejected: it may be "error", among others
createCommunitySync({ getToken: async () => "t", onUnauthorized: "login" }); // rejected: a callback
console.log(leader, typed, status);
