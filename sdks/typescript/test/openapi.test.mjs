// The SDK against the OpenAPI document the gateway serves: a drift fails here (and, for types,
// at build time: src/schema.ts is what the client is typed against).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, test } from "node:test";

import { ERROR_CLASSES, EXCLUDED_OPERATIONS, OPERATIONS, STATUS_CLASSES, X402Client } from "../dist/index.js";
import { fetchDocument, generateSchema } from "../scripts/codegen.mjs";
import { gate, skipUnlessLive } from "./helpers.mjs";

const METHODS = ["get", "put", "post", "delete", "patch"];

function operations(doc) {
  const out = new Map();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      if (item[method]) out.set(item[method].operationId, { method, path, op: item[method] });
    }
  }
  return out;
}

function authOf(op) {
  const schemes = new Set((op.security ?? []).flatMap((r) => Object.keys(r)));
  const key = [...schemes].sort().join("+");
  return { admin: ["admin"], api_key: ["key"], "admin+api_key": ["admin_or_key"], "": ["none", "optional_key"] }[key] ?? [];
}

/** Every disagreement between the client and `doc`. */
export function problems(doc) {
  const out = [];
  const ops = operations(doc);
  for (const id of Object.keys(EXCLUDED_OPERATIONS)) {
    if (!ops.has(id)) out.push(`${id}: excluded from the SDK, but no longer in the document`);
    ops.delete(id);
  }
  const mine = new Map();
  for (const [name, spec] of Object.entries(OPERATIONS)) {
    if (typeof X402Client.prototype[name] !== "function") out.push(`OPERATIONS.${name}: no such method`);
    mine.set(spec.operationId, [...(mine.get(spec.operationId) ?? []), [name, spec]]);
  }
  for (const [id, { method, path, op }] of ops) {
    const bound = mine.get(id);
    if (!bound) {
      out.push(`${method.toUpperCase()} ${path} (${id}): no client method`);
      continue;
    }
    for (const [name, spec] of bound) {
      if (spec.method !== method || spec.path !== path) {
        out.push(`${name}: ${spec.method} ${spec.path} in the SDK, ${method} ${path} in the document`);
      }
      if (!authOf(op).includes(spec.auth)) {
        out.push(`${name}: auth ${spec.auth} in the SDK, security ${JSON.stringify(op.security)} in the document`);
      }
    }
  }
  for (const id of mine.keys()) if (!ops.has(id)) out.push(`${id}: in the SDK, not in the document`);
  // verify takes one of two bodies: one method for each.
  const verify = ops.get("verify");
  if (verify) {
    const ref = verify.op.requestBody.content["application/json"].schema.$ref.split("/").pop();
    const branches = doc.components.schemas[ref].oneOf?.map((s) => s.$ref.split("/").pop()) ?? [];
    if (branches.join() !== "VerifyPaymentRequest,VerifyTransactionRequest") {
      out.push(`verify's body is now ${JSON.stringify(branches)}: verifyPayment and verifyTransaction need a look`);
    }
  }
  const error = doc.components.schemas.ErrorBody.properties.error;
  for (const code of error.enum ?? []) {
    const known = ERROR_CLASSES[code];
    if (!known) out.push(`error code ${code}: no class`);
    else if (known[0] !== error["x-error-statuses"]?.[code]) {
      out.push(`error code ${code}: status ${error["x-error-statuses"]?.[code]} in the document, ${known[0]} in the SDK`);
    }
  }
  for (const code of Object.keys(ERROR_CLASSES)) {
    if (!(error.enum ?? []).includes(code)) out.push(`error class for ${code}: not a code of the document`);
  }
  for (const { method, path, op } of ops.values()) {
    for (const [status, r] of Object.entries(op.responses)) {
      const ref = r.content?.["application/json"]?.schema?.$ref ?? "";
      if (ref.endsWith("/ErrorBody") && !STATUS_CLASSES[status]) {
        out.push(`${method} ${path}: answers ${status}, which has no error class`);
      }
    }
  }
  return out;
}

describe("the served OpenAPI document", { skip: skipUnlessLive }, () => {
  let doc;

  test("regenerating src/schema.ts from it changes nothing", async () => {
    doc = await fetchDocument(gate.url);
    const committed = await readFile(new URL("../src/schema.ts", import.meta.url), "utf8");
    const fresh = await generateSchema(doc);
    assert.ok(
      fresh === committed,
      "src/schema.ts differs from what the served document generates: run `npm run generate -- <admin URL>` in sdks/typescript",
    );
  });

  test("every operation has a client method with its path, method and credential", async () => {
    doc ??= await fetchDocument(gate.url);
    const found = problems(doc);
    assert.deepEqual(found, [], found.join("\n"));
  });

  test("the checks catch drift", async () => {
    doc ??= await fetchDocument(gate.url);
    const caught = async (mutate, expected) => {
      const d = structuredClone(doc);
      mutate(d);
      const found = problems(d);
      assert.ok(found.some((p) => p.includes(expected)), `${expected} not in ${JSON.stringify(found)}`);
    };
    await caught((d) => {
      d.paths["/api/v1/x402/webhooks"] = { get: { operationId: "list_webhooks", responses: {} } };
    }, "list_webhooks");
    await caught((d) => {
      d.paths["/api/v1/x402/keys"].get.security = [{ admin: [] }];
    }, "listKeys: auth key");
    await caught((d) => {
      const e = d.components.schemas.ErrorBody.properties.error;
      e.enum.push("payment_required");
      e["x-error-statuses"].payment_required = 402;
    }, "payment_required");
    // A changed schema changes the generated types.
    const d = structuredClone(doc);
    d.components.schemas.TenantView.properties.plan = { type: "string" };
    d.components.schemas.TenantView.required.push("plan");
    const committed = await readFile(new URL("../src/schema.ts", import.meta.url), "utf8");
    assert.notEqual(await generateSchema(d), committed);
  });
});
