/** The README's provider tables are the data's (scripts/lib/provider-table.ts makes them). */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { agentTable, withTables } from '../scripts/lib/provider-table.js';

describe('README', () => {
  it('shows every provider and agent platform as the data says (npx tsx scripts/provider-table.ts rewrites them)', async () => {
    const readme = await readFile(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
    expect(readme).toBe(await withTables(readme));
    expect(agentTable()).toContain('| `azure` |');
  });
});
