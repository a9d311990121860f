/** JWT helpers of the client: reading `exp` (no verification: the server verifies) and when to refresh. */

/** The token's `exp` in milliseconds, or `undefined` when unreadable. */
export function jwtExpMs(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const json = JSON.parse(globalThis.atob(b64)) as { exp?: unknown };
    return typeof json.exp === "number" ? json.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** When to refresh a token expiring at `expMs`: at 80% of its remaining lifetime, at least 1 s on. */
export function refreshDelayMs(nowMs: number, expMs: number): number {
  const left = Math.max(0, expMs - nowMs);
  return Math.max(1000, Math.floor(left * 0.8));
}
