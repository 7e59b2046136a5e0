/**
 * The release's top-level index: `index.json` (the release, and every artifact with its path under
 * the release directory, size, sha512 and signature) and `SHA512SUMS` (`sha512sum -c` reads it in
 * the release directory).
 */
import type { Release } from './combine.js';
import type { ReleaseIdentity } from './group.js';

export interface IndexArtifact {
  provider: string;
  oemId: string;
  /** Relative to the release directory: `<provider>/<name>`. */
  path: string;
  format: string;
  compression: string;
  size: number;
  sha512: string;
  /** The detached signature's path, relative to the release directory, or null. */
  signature: string | null;
}

export interface ReleaseIndex extends ReleaseIdentity {
  /** Whether every artifact has a detached signature. */
  signed: boolean;
  /** The key that signed them, when all are signed by one key (per their manifests). */
  signingKey: { fingerprint: string; signingKeyFingerprint: string } | null;
  providers: string[];
  artifacts: IndexArtifact[];
}

/** `hasSig(provider, name)`: whether the release has `<provider>/<name>.sig`. */
export function releaseIndex(r: Release, hasSig: (provider: string, name: string) => boolean): ReleaseIndex {
  const artifacts: IndexArtifact[] = r.providers.flatMap((p) =>
    p.manifest.artifacts.map((a) => ({
      provider: p.provider,
      oemId: p.manifest.oemId,
      path: `${p.provider}/${a.name}`,
      format: a.format,
      compression: a.compression,
      size: a.size,
      sha512: a.sha512,
      signature: hasSig(p.provider, a.name) ? `${p.provider}/${a.name}.sig` : null,
    })),
  );
  const signed = artifacts.every((a) => a.signature !== null);
  const keys = new Set(r.providers.map((p) => JSON.stringify(p.manifest.signingKey)));
  const key = r.providers[0]?.manifest.signingKey ?? null;
  return {
    distro: r.distro,
    channel: r.channel,
    board: r.board,
    version: r.version,
    generation: r.generation,
    base: r.base,
    signed,
    signingKey: signed && keys.size === 1 && key ? { fingerprint: key.fingerprint, signingKeyFingerprint: key.signingKeyFingerprint } : null,
    providers: r.providers.map((p) => p.provider),
    artifacts,
  };
}

export function indexJson(index: ReleaseIndex): string {
  return JSON.stringify(index, null, 2) + '\n';
}

/** `<sha512>  <provider>/<name>` per artifact, as sha512sum writes it. */
export function sha512sums(index: ReleaseIndex): string {
  return index.artifacts.map((a) => `${a.sha512}  ${a.path}\n`).join('');
}
