// Compiles the test contracts with solc-js into contracts/artifacts/*.json ({abi, bytecode,
// deployedBytecode}: the runtime code is what `anvil_setCode` places at a fixed address).
// Run by hand after changing a contract (the artifacts are committed, so tests need no compiler):
//   (cd tools && npm ci) && node contracts/compile.mjs
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
const here = path.dirname(new URL(import.meta.url).pathname);
const tools = path.join(here, "..", "tools", "node_modules");
const require = createRequire(path.join(tools, "x.js"));
const solc = require("solc");
const files = ["TestUSDC.sol", "Multicall3Batch.sol", "LyingMulticall3.sol"];
const sources = Object.fromEntries(
  files.map((f) => [f, { content: fs.readFileSync(path.join(here, f), "utf8") }]));
const input = {
  language: "Solidity",
  sources,
  settings: { optimizer: { enabled: true, runs: 200 }, viaIR: true, evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } } },
};
const findImports = (p) => ({ contents: fs.readFileSync(path.join(tools, p), "utf8") });
const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (out.errors || []).filter((e) => e.severity === "error");
if (errors.length) { console.error(errors.map((e) => e.formattedMessage).join("\n")); process.exit(1); }
fs.mkdirSync(path.join(here, "artifacts"), { recursive: true });
for (const file of files) {
  for (const [name, c] of Object.entries(out.contracts[file])) {
    const dest = path.join(here, "artifacts", `${name}.json`);
    fs.writeFileSync(dest, JSON.stringify({ contractName: name, compiler: `solc ${solc.version()}`,
      abi: c.abi, bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object }, null, 1) + "\n");
    console.log(`wrote ${dest}`);
  }
}
