// Pays a URL with the reference x402 client for Solana (@x402/fetch + @x402/svm 2.27, v2, and v1
// for "solana-devnet"/"solana"), as a third-party client would, and prints
// {status, receipt, paymentResponse, body} as JSON. Used by tests/svm_chain.rs.
//   node tools/x402-svm-pay.mjs URL SECRET_KEY_BASE58 RPC_URL
// SECRET_KEY_BASE58 is the 64-byte keypair (secret || public) in base58, as `solana-keygen` and
// Phantom export it. RPC_URL is where the client reads the mint and the latest blockhash
// (getAccountInfo, getLatestBlockhash): the test SVM. The client only accepts the three public
// clusters' CAIP-2 ids (solana:5eykt4…, solana:EtWTRA… devnet, solana:4uhcVJ…), so a local chain
// is advertised as devnet.
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactSvmScheme, toClientSvmSigner } from "@x402/svm";
import { ExactSvmSchemeV1 } from "@x402/svm/v1";
import { createKeyPairSignerFromBytes, getBase58Encoder } from "@solana/kit";

const [url, secret, rpcUrl] = process.argv.slice(2);
if (!url || !secret || !rpcUrl) {
  console.error("usage: node x402-svm-pay.mjs URL SECRET_KEY_BASE58 RPC_URL");
  process.exit(2);
}
const keypair = await createKeyPairSignerFromBytes(getBase58Encoder().encode(secret));
const signer = toClientSvmSigner(keypair);
// Registered by hand, not with registerExactSvmScheme(): that helper drops the RPC URL and would
// read from the public devnet endpoint.
// The client refuses assets it does not know unless told otherwise; ours is a local test mint.
const client = new x402Client()
  .setSpendControls({ allowedAssets: true })
  .register("solana:*", new ExactSvmScheme(signer, { rpcUrl }))
  .registerV1("solana-devnet", new ExactSvmSchemeV1(signer, { rpcUrl }))
  .registerV1("solana", new ExactSvmSchemeV1(signer, { rpcUrl }));
const pay = wrapFetchWithPayment(fetch, client);
const resp = await pay(url);
const header = resp.headers.get("payment-response") ?? resp.headers.get("x-payment-response");
console.log(JSON.stringify({
  status: resp.status,
  receipt: header ? decodePaymentResponseHeader(header) : null,
  paymentResponse: header,
  body: await resp.text(),
}));
