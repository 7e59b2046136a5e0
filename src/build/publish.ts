/**
 * The last stage of a provider's build: what is published beside its artifacts, as the releases do:
 * a `.DIGESTS` per artifact (and with a signing key a detached `.sig` and a clearsigned
 * `.DIGESTS.asc`), `version.txt` with the OEM fields, `manifest.json`; then the provider's directory
 * appears under its final name in one rename, replacing an older one.
 */
import { readFileSync } from 'node:fs';
import { rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { clearsign, signFile, type SigningKey } from '../artifacts/sign.js';
import { packageRoot } from '../paths.js';
import type { Provider } from '../providers/registry.js';
import type { BuildGeneration } from './base.js';
import { sourceDateEpoch } from '../source-date.js';
import type { Base } from './base.js';
import { digestsText, type Hashes } from './digests.js';

export interface ArtifactInfo {
  name: string;
  path: string;
  format: string;
  compression: string;
  size: number;
  sha512: string;
}

export interface ProviderBuild {
  provider: string;
  oemId: string;
  dir: string;
  image: string;
  versionTxt: string;
  digests: string;
  manifest: string;
  artifacts: ArtifactInfo[];
}

/** The time written into manifests and archives: SOURCE_DATE_EPOCH when set (reproducible builds), else now. */
export function buildTime(): Date {
  const e = sourceDateEpoch();
  return e !== undefined ? new Date(e * 1000) : new Date();
}

function builderVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** Writes `NAME.DIGESTS` for an artifact in `dir` and, with a key, `NAME.sig` and `NAME.DIGESTS.asc`. */
export async function describeArtifact(dir: string, name: string, h: Hashes, signer: SigningKey | null): Promise<void> {
  const digests = digestsText([{ name, ...h }]);
  await writeFile(join(dir, `${name}.DIGESTS`), digests);
  if (signer) {
    await writeFile(join(dir, `${name}.sig`), await signFile(join(dir, name), signer));
    await writeFile(join(dir, `${name}.DIGESTS.asc`), await clearsign(digests, signer));
  }
}

export interface PublishInput {
  provider: Provider;
  base: Base;
  generation: BuildGeneration;
  insecure: boolean;
  agent: boolean;
  sshKeyFingerprints: string[];
  config: boolean;
  signer: SigningKey | null;
  createdAt: Date;
  artifacts: ArtifactInfo[];
}

/**
 * Writes version.txt and manifest.json into `tmpDir` (which holds the artifacts and their DIGESTS),
 * then renames it to `outputDir/<provider>`, replacing an older one only once the new one is complete.
 */
export async function publishProvider(tmpDir: string, outputDir: string, x: PublishInput): Promise<ProviderBuild> {
  const { provider: p, base, artifacts } = x;
  const P = base.distro === 'coreos' ? 'COREOS' : 'FLATCAR';
  const vt = { ...base.versionFields, [`${P}_OEM_ID`]: p.oemId, [`${P}_OEM_NAME`]: p.name, [`${P}_OEM_PROVIDER`]: p.id };
  const vtText = Object.entries(vt).map(([k, v]) => `${k}=${/^[A-Za-z0-9._-]*$/.test(v) && v !== '' ? v : JSON.stringify(v)}`).join('\n') + '\n';
  await writeFile(join(tmpDir, 'version.txt'), vtText);
  const manifest = {
    provider: p.id,
    oemId: p.oemId,
    name: p.name,
    distro: base.distro,
    channel: base.channel,
    board: base.board,
    version: base.version,
    generation: x.generation,
    base: { image: basename(base.compressed), sha512: base.sha512, verified: base.verified, insecure: x.insecure, signedBy: base.signedBy },
    builder: { name: 'oem', version: builderVersion() },
    agent: x.agent,
    sshKeys: x.sshKeyFingerprints,
    config: x.config,
    createdAt: x.createdAt.toISOString(),
    signingKey: x.signer ? { fingerprint: x.signer.fingerprint, signingKeyFingerprint: x.signer.signingKeyFingerprint } : null,
    artifacts: artifacts.map(({ path: _p, ...a }) => a),
  };
  await writeFile(join(tmpDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

  // Appear only when complete: swap the finished directory into place.
  const finalDir = join(outputDir, p.id);
  const old = join(outputDir, `.${p.id}.oem-old-${process.pid}`);
  const hadOld = await stat(finalDir).then(() => true, () => false);
  if (hadOld) await rename(finalDir, old);
  await rename(tmpDir, finalDir);
  if (hadOld) await rm(old, { recursive: true, force: true });
  // The raw image when there is one (what inspect and tools read), else the first artifact.
  const main = (artifacts.find((a) => a.format === 'raw') ?? artifacts[0]!).name;
  return {
    provider: p.id,
    oemId: p.oemId,
    dir: finalDir,
    image: join(finalDir, main),
    versionTxt: join(finalDir, 'version.txt'),
    digests: join(finalDir, `${main}.DIGESTS`),
    manifest: join(finalDir, 'manifest.json'),
    artifacts: artifacts.map((a) => ({ ...a, path: join(finalDir, a.name) })),
  };
}
