// x402-gate: a TypeScript client of the x402-gate management API, over fetch.
export * from "./client.js";
export * from "./errors.js";
export type { components, operations, paths } from "./schema.js";
