/** Rewrites the provider tables in README.md from the data (scripts/lib/provider-table.ts). */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { withTables } from './lib/provider-table.js';

const readme = fileURLToPath(new URL('../README.md', import.meta.url));
const before = await readFile(readme, 'utf8');
const after = await withTables(before);
if (after !== before) await writeFile(readme, after);
process.stdout.write(after === before ? 'README.md: the tables are current\n' : 'README.md: tables rewritten\n');
