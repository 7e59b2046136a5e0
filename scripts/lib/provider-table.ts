/**
 * The README's two provider tables, made from the data they describe (templates/<id>/provider.yml
 * and src/shared/platforms.ts), so that they cannot drift: `tsx scripts/provider-table.ts` prints
 * them and rewrites README.md between their markers; test/readme.test.ts fails when README.md
 * differs from what this makes.
 */
import { showSize } from '../../src/artifacts/disk-size.js';
import { FORMAT_EXTENSION } from '../../src/artifacts/formats.js';
import { loadProviders, type Provider } from '../../src/providers/registry.js';
import { AGENT_PLATFORMS, agentPlatform } from '../../src/shared/platforms.js';

const cell = (s: string) => s.replace(/\|/g, '\\|');

function images(p: Provider): string {
  const gens = p.generations.length === 3 ? 'all' : p.generations.join(', ');
  return p.architectures ? `${gens}; ${p.architectures.join(', ')} only` : gens;
}

function at3760(p: Provider): string {
  if (!p.generations.includes('flatcar-sysext')) return '-';
  return p.flatcarPlatform ? `Flatcar's \`oem-${p.flatcarPlatform}.raw\`` : `own extension, \`oem_id=${p.ignitionPlatform}\``;
}

function agentCell(p: Provider): string {
  const units = p.agentUnits.filter((u) => u !== 'provision').map((u) => (u === 'metadata' ? 'attributes' : u));
  if (units.length > 0) return units.join(', ');
  return p.flatcarPlatform !== undefined && !p.generations.includes('coreos') ? "Flatcar's extension's own" : '-';
}

/** The builder's table: one row per provider. */
export function builderTable(providers: Provider[]): string {
  const rows = providers.map((p) => {
    const grown = [...(p.diskSize !== undefined ? [`${showSize(p.diskSize)} disk`] : []), ...(p.rootSectors !== undefined ? [`ROOT ${showSize(p.rootSectors * 512)}`] : [])];
    const formats = p.formats.map((f) => `\`${FORMAT_EXTENSION[f]}\``).join(', ') + (grown.length ? ` (${grown.join(', ')})` : '');
    const names = [p.id, ...p.aliases].map((n) => `\`${n}\``).join(', ');
    return `| ${names} | \`${p.oemId}\` | ${images(p)} | ${at3760(p)} | ${formats} | ${agentCell(p)} |`;
  });
  return ['| provider | oem_id | images | 3760 and later | default artifacts | agent units |', '|---|---|---|---|---|---|', ...rows].join('\n');
}

/** The agent's table: one row per platform it serves. */
export function agentTable(): string {
  const rows = AGENT_PLATFORMS.map((id) => {
    const a = agentPlatform(id)!;
    const names = a.afterburn ? `\`COREOS_${a.name}_*\`, \`AFTERBURN_${a.afterburn}_*\`` : `\`COREOS_${a.name}_*\``;
    return `| \`${id}\` | ${cell(a.reads)} | ${a.does.length ? a.does.join(', ') : 'nothing'} | ${a.does.includes('attributes') ? names : '-'} |`;
  });
  return ['| platform | reads | does | attribute names |', '|---|---|---|---|', ...rows].join('\n');
}

export const MARKERS = {
  builder: ['<!-- providers table: made by scripts/provider-table.ts -->', '<!-- end of providers table -->'],
  agent: ['<!-- agent table: made by scripts/provider-table.ts -->', '<!-- end of agent table -->'],
} as const;

/** README text with both tables replaced by fresh ones. */
export async function withTables(readme: string): Promise<string> {
  const tables = { builder: builderTable(await loadProviders()), agent: agentTable() };
  let out = readme;
  for (const k of ['builder', 'agent'] as const) {
    const [begin, end] = MARKERS[k];
    const a = out.indexOf(begin);
    const b = out.indexOf(end);
    if (a < 0 || b < a) throw new Error(`README.md lacks the markers ${begin} ... ${end}`);
    out = `${out.slice(0, a + begin.length)}\n${tables[k]}\n${out.slice(b)}`;
  }
  return out;
}
