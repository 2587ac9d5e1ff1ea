// Pays a URL with the v1 reference client (x402-fetch 1.x), as a v1-only third-party client
// would, and prints {status, receipt, body} as JSON. Used by tests/money_safety.rs.
//   node tools/x402-v1-pay.mjs URL PRIVATE_KEY
// v1 clients validate the whole 402 body (zod) before paying: an `outputSchema: null` or an
// unknown network name makes them give up, which is what this client proves we do not send.
import { wrapFetchWithPayment, createSigner, decodeXPaymentResponse } from "x402-fetch";

const [url, key] = process.argv.slice(2);
// A local account signs offline; base-sepolia is chain 84532, which our dev chain also is.
const signer = await createSigner("base-sepolia", key);
const pay = wrapFetchWithPayment(fetch, signer);
const resp = await pay(url);
const header = resp.headers.get("x-payment-response");
console.log(JSON.stringify({
  status: resp.status,
  receipt: header ? decodeXPaymentResponse(header) : null,
  body: await resp.text(),
}));
