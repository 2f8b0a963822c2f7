/**
 * Typed errors. Every error Rotor raises on purpose says two things: which HTTP status
 * (and stable code) it maps to, and whether retrying the same operation can help.
 * Anything that is not a RotorError is a bug or an infrastructure failure.
 */
export class RotorError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: 400 | 401 | 403 | 404 | 409 | 413 | 422 | 429 | 502 | 503,
    readonly retryable = false,
  ) {
    super(message);
    this.name = "RotorError";
  }
}

export const invalid = (message: string) => new RotorError("invalid_request", message, 400);
export const unauthorized = (message = "missing or invalid token") => new RotorError("unauthorized", message, 401);
export const forbidden = (message: string) => new RotorError("forbidden", message, 403);
export const notFound = (message: string) => new RotorError("not_found", message, 404);
export const conflict = (message: string) => new RotorError("conflict", message, 409);
export const tooLarge = (message: string) => new RotorError("too_large", message, 413);
export const tooMany = (message: string) => new RotorError("too_many", message, 429);
/** A dependency (database, agent, AWS) failed; retrying later may succeed. */
export const unavailable = (message: string) => new RotorError("unavailable", message, 503, true);

export function isRotorError(e: unknown): e is RotorError {
  return e instanceof RotorError;
}
