// app/static/community-sync.js as an ES module, on any Node from 18 on. Node before
// 20.19 reads a .js file with no package.json around it as CommonJS and fails on
// `export`; there the same source is imported from a data: URL instead.
import { readFile } from "node:fs/promises";

const file = new URL("../../app/static/community-sync.js", import.meta.url);

async function load() {
  try {
    return await import(file.href);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    const source = await readFile(file, "utf8");
    return import(`data:text/javascript;base64,${Buffer.from(source).toString("base64")}`);
  }
}

export default await load();
