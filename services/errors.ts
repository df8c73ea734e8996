export type ErrorCode =
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'invalid_request'
  | 'plan_limit'
  | 'rate_limited'
  | 'conflict'
  | 'gone'
  | 'method_not_allowed'
  | 'unavailable'
  | 'internal';

/** An error meant for the caller: its message says what was wrong and what to do. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} was not found, or you may not see it.`);
export const forbidden = (message: string) => new ApiError(403, 'forbidden', message);
export const invalid = (message: string, details?: Record<string, unknown>) =>
  new ApiError(422, 'invalid_request', message, details);
export const conflict = (message: string) => new ApiError(409, 'conflict', message);

/** Whether a database error is a unique constraint's (SQLite's and PostgreSQL's wording): the caller answers a conflict. */
export const isUniqueViolation = (err: unknown) =>
  /UNIQUE constraint|duplicate key value/i.test(String((err as Error)?.message ?? ''));
