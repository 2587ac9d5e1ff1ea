// The management API, called with the session cookie (HttpOnly: this code never sees it) and,
// on every change, the session's CSRF token in X-CSRF-Token.

export interface SessionInfo {
  role: "operator" | "tenant";
  tenant: string | null;
  scopes: string[];
  csrf: string;
}

export interface FieldError {
  field: string;
  message: string;
}

/** A refused or failed request: the API's `{"error", "message", "fields"?}` with its status. */
export class ApiFail extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public fields: FieldError[] = [],
  ) {
    super(message);
  }
}

let csrf = "";
let onSignedOut: () => void = () => {};

export function setSession(s: SessionInfo | null) {
  csrf = s?.csrf ?? "";
}

export function whenSignedOut(f: () => void) {
  onSignedOut = f;
}

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") headers["x-csrf-token"] = csrf;
  const resp = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 204) return undefined as T;
  const text = await resp.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const fail = new ApiFail(
      resp.status,
      data?.error ?? "error",
      data?.message ?? `HTTP ${resp.status}`,
      Array.isArray(data?.fields) ? data.fields : [],
    );
    if (resp.status === 401 && path !== "/dashboard/api/login") onSignedOut();
    throw fail;
  }
  return data as T;
}

export const get = <T>(path: string) => call<T>("GET", path);
export const post = <T>(path: string, body?: unknown) => call<T>("POST", path, body ?? {});
export const patch = <T>(path: string, body: unknown) => call<T>("PATCH", path, body);
export const del = <T>(path: string) => call<T>("DELETE", path);

export function qs(params: Record<string, string | number | null | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") p.set(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

// Shapes of the management API's answers (see /api/v1/openapi.json).
export interface Day {
  day: string;
  payments: number;
}
export interface Revenue {
  route: string;
  network: string;
  asset: string;
  payments: number;
  amount: string;
}
export interface Usage {
  tenant: string;
  tier: string;
  period: string;
  verified: number;
  limit: number | null;
  remaining: number | null;
  revenue: Revenue[];
  daily: Day[];
}
export interface Payment {
  id: number;
  tenant: string;
  route: string;
  network: string;
  asset: string;
  payer: string;
  amount: string;
  status: string;
  tx_hash: string | null;
  error: string | null;
  error_reason: string | null;
  claimed_at: number;
}
export interface PaymentsPage {
  payments: Payment[];
  next_before: number | null;
}
export interface Key {
  id: string;
  tenant_id: string;
  prefix: string;
  scopes: string[];
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
  replaced_by: string | null;
}
export interface NewKey extends Key {
  key: string;
}
export interface Tenant {
  id: string;
  name: string;
  email: string | null;
  tier: string;
  status: string;
  pay_to: Record<string, string>;
  source: string;
  created_at: number;
}
export interface Tier {
  name: string;
  monthly_verifications: number | null;
  networks: string[];
}
export interface Route {
  id: string;
  tenant: string;
  host: string | null;
  path: string;
  methods: string[] | null;
  upstream: string;
  price: string;
  networks: string[] | null;
  settle: string;
  description: string;
  source: "api" | "config";
}
export interface Chains {
  chains: { network: string; assets: { symbol: string; address: string; decimals: number }[] }[];
}
