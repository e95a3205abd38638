/** Jittered exponential backoff between reconnect and retry attempts. */

export interface BackoffOptions {
  /** The first delay, before jitter (default 100 ms). */
  readonly initialDelayMs?: number;
  /** The longest delay, before jitter (default 5 s). */
  readonly maxDelayMs?: number;
  /** How much each delay grows over the previous one (default 2). */
  readonly multiplier?: number;
}

/**
 * Delays that grow from `initialDelayMs` to `maxDelayMs`, each drawn at random from the upper
 * half of its step ("equal jitter"), so that many clients cut off at the same moment (a replica
 * drained or killed) do not come back in lockstep, yet none retries at once.
 */
export class Backoff {
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly multiplier: number;
  private attempt = 0;

  constructor(options: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.initialDelayMs = options.initialDelayMs ?? 100;
    this.maxDelayMs = options.maxDelayMs ?? 5000;
    this.multiplier = options.multiplier ?? 2;
    if (!(this.initialDelayMs > 0 && this.maxDelayMs >= this.initialDelayMs && this.multiplier >= 1)) {
      throw new RangeError("backoff needs 0 < initialDelayMs <= maxDelayMs and multiplier >= 1");
    }
  }

  /** The next delay in milliseconds, at least `floorMs` (a server's RetryInfo, say). */
  next(floorMs = 0): number {
    const step = Math.min(this.maxDelayMs, this.initialDelayMs * this.multiplier ** this.attempt);
    this.attempt += 1;
    return Math.max(floorMs, step / 2 + (step / 2) * this.random());
  }

  /** Start again from the first delay (after an attempt that made progress). */
  reset(): void {
    this.attempt = 0;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
