import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { isHeavy } from './heavy-files.js';

/**
 * vitest's order (slowest first, from the last run), with the heavy files spread out over it rather than
 * bunched at its start: only one of them runs at a time (test/support/heavy-lock.ts), and one waiting for it
 * would hold a worker doing nothing.
 */
export default class SpreadHeavyFiles extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const heavy = sorted.filter((f) => isHeavy(f.moduleId));
    const light = sorted.filter((f) => !isHeavy(f.moduleId));
    if (heavy.length === 0) return sorted;
    const every = Math.max(1, Math.floor(light.length / heavy.length));
    const out: TestSpecification[] = [];
    light.forEach((f, i) => {
      if (i % every === 0 && heavy.length > 0) out.push(heavy.shift()!);
      out.push(f);
    });
    return [...out, ...heavy];
  }
}
