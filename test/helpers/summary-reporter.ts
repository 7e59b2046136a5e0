/**
 * Prints, at the end of a run, the slowest files and tests (so the suite's time budget stays visible)
 * and the plain closing line CI reads: "N passed, N failed, N skipped".
 */
import type { Reporter, TestModule } from 'vitest/node';

const SLOWEST = 10;

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`.padStart(8);
}

export default class SummaryReporter implements Reporter {
  private started = Date.now();

  onTestRunStart(): void {
    this.started = Date.now();
  }

  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const tests: { name: string; ms: number }[] = [];
    const files: { name: string; ms: number }[] = [];
    for (const m of modules) {
      let moduleFailed = 0;
      files.push({ name: m.moduleId.replace(`${process.cwd()}/`, ''), ms: m.diagnostic().duration });
      for (const t of m.children.allTests()) {
        const s = t.result().state;
        if (s === 'passed') passed++;
        else if (s === 'failed') moduleFailed++;
        else skipped++;
        const d = t.diagnostic();
        if (d) tests.push({ name: t.fullName, ms: d.duration });
      }
      // A file that failed outside its tests (a hook, an import) counts as one failure.
      if (m.state() === 'failed' && moduleFailed === 0) moduleFailed = 1;
      failed += moduleFailed;
    }
    const out: string[] = ['', `Slowest files (the whole run took ${seconds(Date.now() - this.started).trim()}):`];
    for (const f of files.sort((a, b) => b.ms - a.ms).slice(0, SLOWEST)) out.push(`${seconds(f.ms)}  ${f.name}`);
    out.push('Slowest tests:');
    for (const t of tests.sort((a, b) => b.ms - a.ms).slice(0, SLOWEST)) out.push(`${seconds(t.ms)}  ${t.name}`);
    process.stdout.write(`${out.join('\n')}\n\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
