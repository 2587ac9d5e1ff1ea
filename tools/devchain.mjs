// A local chain for trying x402-gate by hand: anvil on 127.0.0.1:8545 with chain id 84532 (looks
// like Base Sepolia), our EIP-3009 test token deployed by dev account 0 (so it always lands at
// 0x5FbDB2315678afecb367f032d93F642f64180aa3, the default in config/local.toml), and 1,000 test
// USDC minted to dev account 2, the payer. Stops with Ctrl-C.
//   (cd tools && npm ci) && node tools/devchain.mjs
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createWalletClient, createPublicClient, http, encodeDeployData, encodeFunctionData } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const here = path.dirname(new URL(import.meta.url).pathname);
const anvilBin = path.join(here, "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
const DEPLOYER = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAYER = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
const chain = { id: 84532, name: "anvil-84532", nativeCurrency: { name: "ETH", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: ["http://127.0.0.1:8545"] } } };

const anvil = spawn(anvilBin, ["--chain-id", "84532", "--port", "8545", "--silent"], { stdio: "inherit" });
process.on("SIGINT", () => { anvil.kill(); process.exit(0); });
const pub = createPublicClient({ chain, transport: http() });
for (let i = 0; ; i++) {
  try { await pub.getChainId(); break; } catch { if (i > 100) throw new Error("anvil did not start"); }
  await new Promise((r) => setTimeout(r, 50));
}
const token = JSON.parse(fs.readFileSync(path.join(here, "../contracts/artifacts/TestUSDC.json"), "utf8"));
const wallet = createWalletClient({ chain, transport: http(), account: privateKeyToAccount(DEPLOYER) });
const hash = await wallet.sendTransaction({
  data: encodeDeployData({ abi: token.abi, bytecode: token.bytecode, args: ["USD Coin", "2"] }) });
const { contractAddress } = await pub.waitForTransactionReceipt({ hash });
const payer = privateKeyToAccount(PAYER);
await pub.waitForTransactionReceipt({ hash: await wallet.sendTransaction({ to: contractAddress,
  data: encodeFunctionData({ abi: token.abi, functionName: "mint", args: [payer.address, 1_000_000_000n] }) }) });
console.log(`anvil on http://127.0.0.1:8545 (chain 84532)`);
console.log(`TestUSDC ("USD Coin", version "2", 6 decimals) at ${contractAddress}`);
console.log(`payer ${payer.address} holds 1000 USDC; its key: ${PAYER}`);
console.log(`pay: node tools/x402-fetch-pay.mjs http://127.0.0.1:8402/paid/report ${PAYER}`);
