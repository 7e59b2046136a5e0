/** version.txt of a release: FLATCAR_* or COREOS_* keys. */
import { OemError } from '../shared/errors.js';
import { parseKeyValues } from '../image/generation.js';
import type { Distro } from './verify.js';

export interface ReleaseVersion {
  distro: Distro;
  version: string;
  build: number;
  branch: number;
  patch: number;
  sdkVersion?: string;
  /** Every key of the file, as given. */
  fields: Record<string, string>;
}

const VERSION_RE = /^(\d+)\.(\d+)\.(\d+)$/;

export function isVersion(s: string): boolean {
  return VERSION_RE.test(s);
}

/**
 * Parses version.txt. `expect` names the distro whose keys must be there (FLATCAR_ or COREOS_);
 * missing or malformed keys are an OemError naming the key.
 */
export function parseVersionTxt(text: string, expect: Distro, source = 'version.txt'): ReleaseVersion {
  const fields = parseKeyValues(text);
  const prefix = expect === 'coreos' ? 'COREOS' : 'FLATCAR';
  const other = expect === 'coreos' ? 'FLATCAR' : 'COREOS';
  const get = (k: string) => fields[`${prefix}_${k}`];
  const version = get('VERSION') ?? get('VERSION_ID');
  if (version === undefined) {
    const hint = fields[`${other}_VERSION`] !== undefined ? `it has ${other}_* keys: use --distro ${other.toLowerCase()}` : undefined;
    throw new OemError(`${source} has no ${prefix}_VERSION`, { code: 'badImage', ...(hint ? { hint } : {}) });
  }
  const m = VERSION_RE.exec(version);
  if (!m) throw new OemError(`${source}: ${prefix}_VERSION=${JSON.stringify(version)} is not a version X.Y.Z`, { code: 'badImage' });
  const [build, branch, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  for (const [k, want] of [['BUILD', build], ['BRANCH', branch], ['PATCH', patch]] as const) {
    const v = get(k);
    if (v !== undefined && (!/^\d+$/.test(v) || Number(v) !== want)) {
      throw new OemError(`${source}: ${prefix}_${k}=${JSON.stringify(v)} does not match ${prefix}_VERSION=${version}`, { code: 'badImage' });
    }
  }
  const r: ReleaseVersion = { distro: expect, version, build, branch, patch, fields };
  const sdk = get('SDK_VERSION');
  if (sdk) r.sdkVersion = sdk;
  return r;
}
