import type { Chains } from "./api";

// Block explorers by CAIP-2 network, for links to a payment's transaction. A network not listed
// (a local chain) shows the hash without a link.
const EXPLORERS: Record<string, (tx: string) => string> = {
  "eip155:1": (tx) => `https://etherscan.io/tx/${tx}`,
  "eip155:11155111": (tx) => `https://sepolia.etherscan.io/tx/${tx}`,
  "eip155:8453": (tx) => `https://basescan.org/tx/${tx}`,
  "eip155:84532": (tx) => `https://sepolia.basescan.org/tx/${tx}`,
  "eip155:10": (tx) => `https://optimistic.etherscan.io/tx/${tx}`,
  "eip155:42161": (tx) => `https://arbiscan.io/tx/${tx}`,
  "eip155:137": (tx) => `https://polygonscan.com/tx/${tx}`,
  "eip155:80002": (tx) => `https://amoy.polygonscan.com/tx/${tx}`,
  "eip155:43114": (tx) => `https://snowtrace.io/tx/${tx}`,
  "eip155:43113": (tx) => `https://testnet.snowtrace.io/tx/${tx}`,
  "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp": (tx) => `https://explorer.solana.com/tx/${tx}`,
  "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1": (tx) =>
    `https://explorer.solana.com/tx/${tx}?cluster=devnet`,
};

export function explorerUrl(network: string, tx: string): string | null {
  const f = EXPLORERS[network];
  return f ? f(tx) : null;
}

/** Atomic units of an asset as a decimal amount with its symbol, when the asset is known. */
export function money(chains: Chains | null, network: string, asset: string, atomic: string): string {
  const a = chains?.chains
    .find((c) => c.network === network)
    ?.assets.find((x) => x.address.toLowerCase() === asset.toLowerCase());
  if (!a) return `${atomic} (atomic)`;
  const n = BigInt(atomic);
  const base = 10n ** BigInt(a.decimals);
  const whole = n / base;
  const frac = (n % base).toString().padStart(a.decimals, "0").replace(/0+$/, "");
  return `${whole}${frac ? "." + frac : ""} ${a.symbol}`;
}

export function assetName(chains: Chains | null, network: string, asset: string): string {
  const a = chains?.chains
    .find((c) => c.network === network)
    ?.assets.find((x) => x.address.toLowerCase() === asset.toLowerCase());
  return a ? a.symbol : short(asset);
}

export function short(s: string): string {
  return s.length > 14 ? `${s.slice(0, 6)}…${s.slice(-4)}` : s;
}

export function when(unix: number | null): string {
  if (!unix) return "—";
  return new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}
