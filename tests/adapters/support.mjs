// Shared by the adapter tests: the client runs as in a page (a `window`), against a
// fetch whose held poll the test answers.
globalThis.window ??= new EventTarget();

const rust = { id: "c-rust", slug: "rust", name: "Rust", role: "member" };
const go = { id: "c-go", slug: "go", name: "Go", role: "member" };
const json = (body) => new Response(JSON.stringify(body), { headers: { "Content-Type": "application/json" } });

/** A fetch: a snapshot listing Rust, then polls held until `answer(body)`. */
export function answers() {
  let snapshots = 0;
  let polls = 0;
  let respond = null;
  const fetch = (url, init) => {
    if (new URL(url).pathname === "/me/communities") {
      snapshots += 1;
      return Promise.resolve(json({ communities: [rust], hash: "h1", cursor: "c1", server_time: "t" }));
    }
    polls += 1;
    return new Promise((resolve, reject) => {
      respond = (body) => resolve(json(body));
      init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
    });
  };
  return Object.assign(fetch, {
    rust,
    go,
    snapshots: () => snapshots,
    polls: () => polls,
    answer: (body) => respond(body),
  });
}

/** Resolves once `condition()` holds (within 5 s), letting `act` flush renders if given. */
export async function settle(condition, act = async (run) => run()) {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`still not so: ${condition}`);
    await act(async () => new Promise((resolve) => setTimeout(resolve, 5)));
  }
}
