/**
 * The one retry policy for network requests, used by the builder's release downloads and by the
 * agent's metadata requests and file sources: a number of attempts, a wait before each retry that
 * starts at `initialDelayMs` and doubles up to `maxDelayMs`, and the same idea of what is worth
 * another try (no answer, a dropped connection, a timeout, HTTP 408, 429 and 5xx). Everything else
 * (an OemError: 404, another 4xx, a checksum mismatch, a full disk) ends the attempts at once.
 */
import { describe, OemError } from './errors.js';

export interface RetryPolicy {
  /** Attempts in all (at least 1). */
  tries: number;
  /** Wait before the second attempt, doubled after each failure... */
  initialDelayMs: number;
  /** ...up to this. */
  maxDelayMs: number;
  /** Stops the waits (and the attempts) with an `interrupted` OemError. */
  signal?: AbortSignal;
}

/** Whether an HTTP status is worth another try. */
export function retryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

/** "HTTP 503 Service Unavailable". */
export function statusText(res: Pick<Response, 'status' | 'statusText'>): string {
  return `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
}

/** One line for a failed fetch: the timeout, or the error with the system's reason (ECONNREFUSED...). */
export function describeFetchError(err: unknown, timeoutMs?: number): string {
  const timedOut = (e: unknown) => ['TimeoutError', 'AbortError'].includes((e as Error | undefined)?.name ?? '');
  const cause = (err as { cause?: unknown } | undefined)?.cause;
  if (timeoutMs !== undefined && (timedOut(err) || timedOut(cause))) return `timed out after ${timeoutMs} ms`;
  if (cause instanceof Error) return `${describe(err)}: ${(cause as NodeJS.ErrnoException).code ?? cause.message}`;
  return describe(err);
}

function interrupted(): OemError {
  return new OemError('interrupted', { code: 'interrupted' });
}

function wait(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(interrupted());
    const onAbort = () => {
      clearTimeout(t);
      reject(interrupted());
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The attempts ran out: `last` is the last attempt's error. */
export class RetriesExhausted extends Error {
  constructor(
    readonly attempts: number,
    readonly last: unknown,
  ) {
    super(`failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${describe(last)}`);
  }
}

/**
 * Runs `attempt(1)`, `attempt(2)`... until one returns. An OemError ends it at once (thrown as it
 * is); any other error is retried after the policy's wait, with `onRetry` told first. When the
 * attempts run out, a RetriesExhausted carries the last error.
 */
export async function withRetries<T>(
  policy: RetryPolicy,
  attempt: (n: number) => Promise<T>,
  onRetry?: (n: number, reason: unknown, delayMs: number) => void,
): Promise<T> {
  const tries = Math.max(1, Math.floor(policy.tries));
  let delay = Math.max(0, policy.initialDelayMs);
  for (let n = 1; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      if (err instanceof OemError) throw err;
      if (policy.signal?.aborted) throw interrupted();
      if (n >= tries) throw new RetriesExhausted(n, err);
      onRetry?.(n, err, delay);
      await wait(delay, policy.signal);
      delay = Math.min(delay * 2, Math.max(0, policy.maxDelayMs));
    }
  }
}
