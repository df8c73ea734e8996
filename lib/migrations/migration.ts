import type { Kysely, Migration } from 'kysely';
import type { DbEngine } from '../db.js';

/** Column types that differ by engine: auto-increment ids, the foreign keys that point at them. */
export function columnTypes(engine: DbEngine) {
  return {
    id: engine === 'postgres' ? ('bigserial' as const) : ('integer' as const),
    fk: engine === 'postgres' ? ('bigint' as const) : ('integer' as const),
    pk: (col: any) => (engine === 'sqlite' ? col.primaryKey().autoIncrement() : col.primaryKey()),
  };
}

export type ColumnTypes = ReturnType<typeof columnTypes>;

/**
 * One migration, named as Kysely records it (`NNNN_name`), whose `up` gets the engine's column types.
 * The result is what index.ts spreads into every migration by name. A migration applied somewhere is
 * history: its statements never change once released, only this wrapper may.
 */
export function migration(
  name: string,
  up: (db: Kysely<any>, types: ColumnTypes) => Promise<void>,
): (engine: DbEngine) => Record<string, Migration> {
  return (engine) => {
    const types = columnTypes(engine);
    return { [name]: { up: (db: Kysely<any>) => up(db, types) } };
  };
}
