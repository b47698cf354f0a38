// The browser client's modules, from app/static, on any Node from 18 on. The default
// export is the public module (community-sync.js); `decisions` is its pure internal
// module and `relay` the parent-page module. Node before 20.19 reads a .js file with no
// package.json around it as CommonJS and fails on `export`; there the files are copied
// next to a package.json that says "module", so their relative imports still resolve.
import { cp, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const staticDir = new URL("../../app/static/", import.meta.url);
const MODULES = [
  "community-sync.js",
  "community-sync-decisions.js",
  "community-sync-relay.js",
  "community-sync-election.js",
  "community-sync-requests.js",
  "community-sync-calls.js",
  "community-sync-store.js",
  "community-sync-tabs.js",
  "community-sync-loop.js",
  "community-sync-watches.js",
  "community-sync-optimistic.js",
];

async function importAll(base) {
  return Promise.all(MODULES.map((name) => import(new URL(name, base).href)));
}

async function load() {
  try {
    return await importAll(staticDir);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    const dir = await mkdtemp(join(tmpdir(), "community-sync-"));
    await writeFile(join(dir, "package.json"), '{"type": "module"}');
    for (const name of MODULES) await cp(new URL(name, staticDir), join(dir, name));
    return importAll(pathToFileURL(`${dir}/`));
  }
}

// The fetch-loop tests run the client as a page does: it polls only in a browser (a
// `window`), not on the server side of a framework. `window` is where the page's
// online and offline events arrive.
globalThis.window ??= new EventTarget();

const [client, decisions, relay] = await load();

export { decisions, relay };
export default client;
