import { useEffect, useState } from "preact/hooks";
import { ApiFail, get, type Chains } from "../api";

/** An error as the page shows it. */
export function Failure({ error }: { error: unknown }) {
  if (!error) return null;
  const text =
    error instanceof ApiFail ? `${error.message} (${error.code})` : String(error);
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

let chainsOnce: Promise<Chains | null> | null = null;

/** The configured networks and assets (for amounts and asset names), fetched once. */
export function useChains(): Chains | null {
  const [c, setC] = useState<Chains | null>(null);
  useEffect(() => {
    chainsOnce ??= get<Chains>("/api/v1/x402/supported-chains").catch(() => null);
    chainsOnce.then(setC);
  }, []);
  return c;
}
