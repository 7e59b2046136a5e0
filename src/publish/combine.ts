/**
 * The groups of one release, put together: every provider directory must be of the same distro,
 * board, version and base image (its sha512); a provider in two groups is taken once if both are
 * byte-identical, else refused.
 */
import type { Manifest, ProviderDir, ReleaseIdentity } from './group.js';
import { refuse } from './refuse.js';

/** The release's identity (from the first provider directory) and its providers. */
export interface Release extends ReleaseIdentity {
  /** One directory per provider, sorted by provider. */
  providers: ProviderDir[];
}

const SAME: [string, (m: Manifest) => string][] = [
  ['distro', (m) => m.distro],
  ['board', (m) => m.board],
  ['version', (m) => m.version],
  ['base image sha512', (m) => m.base.sha512],
];

export function combine(groups: ProviderDir[][]): Release {
  const all = groups.flat();
  const first = all[0];
  if (!first) throw refuse('no group given', 'oem publish DIR... --output-dir OUT');
  for (const p of all) {
    for (const [what, get] of SAME) {
      if (get(p.manifest) !== get(first.manifest)) {
        throw refuse(
          `${p.group}: ${p.provider}/manifest.json: ${what} ${get(p.manifest)}, but ${first.group}: ${first.provider}/manifest.json has ${get(first.manifest)}`,
          'publish the groups of one release together: built from the same base image (distro, board and version)',
        );
      }
    }
  }
  const chosen = new Map<string, ProviderDir>();
  for (const p of all) {
    const seen = chosen.get(p.provider);
    if (!seen) {
      chosen.set(p.provider, p);
      continue;
    }
    const differs = [...new Set([...seen.files.keys(), ...p.files.keys()])].sort().find((f) => seen.files.get(f) !== p.files.get(f));
    if (differs !== undefined) {
      throw refuse(
        `${p.group}: ${p.provider}/${differs}: the provider ${p.provider} is also in ${seen.group}, and differs`,
        'build each provider in one group only, or give one of the two',
      );
    }
  }
  const m = first.manifest;
  return {
    distro: m.distro,
    channel: m.channel,
    board: m.board,
    version: m.version,
    generation: m.generation,
    base: { image: m.base.image, sha512: m.base.sha512 },
    providers: [...chosen.values()].sort((a, b) => (a.provider < b.provider ? -1 : a.provider > b.provider ? 1 : 0)),
  };
}
