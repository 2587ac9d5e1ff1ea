// Regenerates src/schema.ts from a running gateway's OpenAPI document, or from a saved one:
//   npm run generate -- http://127.0.0.1:8403
//   npm run generate -- openapi.json
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

import { fetchDocument, generateSchema } from "./codegen.mjs";

const source = process.argv[2] ?? "http://127.0.0.1:8403";
const doc = /^https?:\/\//.test(source)
  ? await fetchDocument(source)
  : JSON.parse(await readFile(source, "utf8"));
const out = fileURLToPath(new URL("../src/schema.ts", import.meta.url));
await writeFile(out, await generateSchema(doc));
console.log(`wrote ${out} from ${source}`);
