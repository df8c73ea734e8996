/**
 * Cursor pagination of every list (GET /sessions, /apps, …): keyset on the row id, so that a page
 * never skips or repeats a row when rows are added between two requests. A list is ordered by id
 * (newest first for sessions, Operations and drain failures; oldest first for the rest) and a cursor
 * is the position after the last row of a page.
 *
 * The cursor is opaque to clients: the 8 bytes of that id, big-endian, in base64url (11 characters).
 * Every 11-character base64url string is a position, so the query schema in /openapi.json states
 * exactly what the API accepts: a well-formed cursor is never refused, and one past the end of the
 * list is simply an empty page. Permissions and filters apply to every page afresh, so a cursor
 * carries no rights and a client can gain nothing by making one up.
 */

export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 500;
export const CURSOR_PATTERN = /^[A-Za-z0-9_-]{11}$/;

export interface PageRequest {
  limit: number;
  /** The id after which the page starts (in the list's order); absent: the first page. */
  after?: number;
}

export interface Page<T> {
  items: T[];
  /** Pass it as `cursor` for the next page; null on the last page. */
  next_cursor: string | null;
}

export function encodeCursor(id: number): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(id));
  return b.toString('base64url');
}

/** The id of a cursor (see CURSOR_PATTERN); ids beyond the largest safe integer mean "past every row". */
export function decodeCursor(cursor: string): number {
  const value = Buffer.from(cursor, 'base64url').readBigUInt64BE(0);
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}

/**
 * A page from the rows of a query that asked for `limit + 1` rows: the extra row, when there is one,
 * says that there is a next page (no count query).
 */
export async function pageOf<R, T>(
  rows: R[],
  req: PageRequest,
  id: (row: R) => number,
  view: (row: R) => T | Promise<T>,
): Promise<Page<T>> {
  const more = rows.length > req.limit;
  const kept = more ? rows.slice(0, req.limit) : rows;
  const items = await Promise.all(kept.map(view));
  return { items, next_cursor: more ? encodeCursor(id(kept[kept.length - 1]!)) : null };
}

/** The first page of a list with nothing in it. */
export const emptyPage = <T>(): Page<T> => ({ items: [], next_cursor: null });
