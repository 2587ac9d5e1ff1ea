// Pays a URL with the reference x402 client (@x402/fetch + @x402/evm, v2), as a third-party
// client would, and prints {status, receipt, body} as JSON. Used by tests/evm.rs.
//   node tools/x402-fetch-pay.mjs URL PRIVATE_KEY
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm";
import { privateKeyToAccount } from "viem/accounts";

const [url, key] = process.argv.slice(2);
const account = privateKeyToAccount(key);
// The client refuses assets it does not know unless told otherwise; ours is a local test token.
const client = new x402Client().setSpendControls({ allowedAssets: true });
client.register("eip155:*", new ExactEvmScheme(account));
const pay = wrapFetchWithPayment(fetch, client);
const resp = await pay(url);
const header = resp.headers.get("payment-response");
console.log(JSON.stringify({
  status: resp.status,
  receipt: header ? decodePaymentResponseHeader(header) : null,
  body: await resp.text(),
}));
