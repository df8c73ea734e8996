/** Nearest-rank percentile of a non-empty sample. */
export function percentile(sample: number[], p: number): number {
  if (sample.length === 0) throw new Error('percentile of an empty sample');
  const sorted = [...sample].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

export function formatTable(rows: { benchmark: string; metric: string; value: number; unit: string; note?: string }[]): string {
  const cells = [
    ['benchmark', 'metric', 'value', 'unit', 'note'],
    ...rows.map((r) => [r.benchmark, r.metric, String(round(r.value, 2)), r.unit, r.note ?? '']),
  ];
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => (i === 2 ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}
