/**
 * The one conversion from "a table or a list of rows" to a list of row objects, shared by every
 * function that takes a dataset (arquero tables have `objects()`; plain arrays pass through).
 *
 * @module
 */

/** Something with rows: an arquero table (`objects()`) or a plain array of records. */
export type RowSource<R = Record<string, unknown>> = readonly R[] | { objects(): unknown[] };

/**
 * The rows of `data` as objects: an arquero table's `objects()`, or the array itself. `where` names
 * the argument in the error for anything else.
 *
 * @example
 * ```ts
 * import { tableRows } from "./table.ts";
 * const rows = tableRows({ objects: () => [{ id: "q1" }] });
 * console.assert(rows.length === 1 && tableRows([{ id: 1 }]).length === 1);
 * ```
 */
export function tableRows<R = Record<string, unknown>>(data: RowSource<R>, where = "the dataset"): R[] {
  if (Array.isArray(data)) return data as R[];
  if (data && typeof (data as { objects?: unknown }).objects === "function") {
    return (data as { objects(): unknown[] }).objects() as R[];
  }
  throw new Error(`${where} must be an arquero table or an array of row objects, not ${typeof data}.`);
}
