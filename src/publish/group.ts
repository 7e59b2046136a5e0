/**
 * Reading one group (the --output-dir of one `oem build` run) for `oem publish`: every provider
 * directory in it, each checked against its own manifest.json. Every artifact the manifest lists
 * must be there with exactly its size and sha512, its .DIGESTS must be the one its bytes give, and
 * nothing else may be there: a leftover of an unfinished build (`.oem-tmp`, `.oem-work`), a file the
 * manifest does not account for, a signed provider without its signatures. The first problem is
 * thrown as an OemError naming the group and the file.
 */
import { readFile, readdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { hashFile } from '../artifacts/hash.js';
import { digestsText } from '../build/digests.js';
import { mapInOrder } from '../concurrency.js';
import { describe } from '../shared/errors.js';
import { mismatch, refuse } from './refuse.js';

/** Which release a group was built from: every group of one release agrees on all of it. */
export interface ReleaseIdentity {
  distro: string;
  channel: string;
  board: string;
  version: string;
  generation: string;
  base: { image: string; sha512: string };
}

/** What `oem publish` reads of a provider's manifest.json (publishProvider writes more). */
export interface Manifest extends ReleaseIdentity {
  provider: string;
  oemId: string;
  signingKey: { fingerprint: string; signingKeyFingerprint: string } | null;
  artifacts: { name: string; format: string; compression: string; size: number; sha512: string }[];
}

export interface ProviderDir {
  /** The group as given on the command line (for messages). */
  group: string;
  provider: string;
  /** Absolute path of the provider's directory. */
  dir: string;
  manifest: Manifest;
  /** The manifest's text, as it is. */
  manifestText: string;
  /** Every file of the directory and the sha512 of its bytes. */
  files: Map<string, string>;
}

/** Names an unfinished or interrupted build leaves. */
const LEFTOVER = /\.oem-(tmp|work|old)/;
const PARTIAL_HINT = 'publish only groups whose oem build finished (rebuild that group)';

/** Reads and checks every provider directory of a group. */
export async function readGroup(group: string): Promise<ProviderDir[]> {
  const dir = resolve(group);
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    throw refuse(`${group}: cannot read the group directory: ${describe(err)}`, 'give the --output-dir of each oem build run');
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const out: ProviderDir[] = [];
  for (const e of entries) {
    if (LEFTOVER.test(e.name)) throw refuse(`${group}: ${e.name}: left over from an unfinished or interrupted build`, PARTIAL_HINT);
    // Other hidden directories (.git) and the files of a group's top level (a release's index) are not providers.
    if (!e.isDirectory() || e.name.startsWith('.')) continue;
    out.push(await readProviderDir(group, join(dir, e.name), e.name));
  }
  if (!out.length) throw refuse(`${group}: no provider directory in it (<provider>/manifest.json)`, 'give the --output-dir of each oem build run');
  return out;
}

function isString(v: unknown): v is string {
  return typeof v === 'string' && v !== '';
}

/** A manifest's shape, checked as far as publishing relies on it. */
function checkManifest(m: unknown, provider: string, where: string): Manifest {
  const bad = (what: string) => refuse(`${where}: ${what}`, PARTIAL_HINT);
  if (typeof m !== 'object' || m === null) throw bad('not a JSON object');
  const x = m as Record<string, unknown>;
  for (const k of ['provider', 'oemId', 'distro', 'channel', 'board', 'version', 'generation'] as const) {
    if (!isString(x[k])) throw bad(`no ${k}`);
  }
  if (x.provider !== provider) throw bad(`it is the manifest of ${JSON.stringify(x.provider)}, in the directory ${provider}`);
  const base = x.base as Record<string, unknown> | undefined;
  if (typeof base !== 'object' || base === null || !isString(base.image) || !isString(base.sha512)) throw bad('no base image and sha512');
  const sk = x.signingKey as Record<string, unknown> | null | undefined;
  if (sk !== null && (typeof sk !== 'object' || !isString(sk.fingerprint) || !isString(sk.signingKeyFingerprint))) throw bad('signingKey is neither null nor a key');
  if (!Array.isArray(x.artifacts) || !x.artifacts.length) throw bad('no artifacts listed');
  for (const a of x.artifacts as Record<string, unknown>[]) {
    if (typeof a !== 'object' || a === null || !isString(a.name) || !isString(a.format) || !isString(a.compression) || !isString(a.sha512) || typeof a.size !== 'number') {
      throw bad('an artifact without name, format, compression, size and sha512');
    }
    if (a.name.includes('/') || a.name.startsWith('.') || a.name === 'manifest.json' || a.name === 'version.txt') throw bad(`artifact name ${JSON.stringify(a.name)} is not a plain file name`);
  }
  return m as Manifest;
}

async function readProviderDir(group: string, dir: string, provider: string): Promise<ProviderDir> {
  const at = (name: string) => `${group}: ${provider}/${name}`;
  const entries = await readdir(dir, { withFileTypes: true });
  for (const e of entries) {
    if (LEFTOVER.test(e.name)) throw refuse(`${at(e.name)}: left over from an unfinished or interrupted build`, PARTIAL_HINT);
    if (!e.isFile()) throw refuse(`${at(e.name)}: not a regular file (a provider directory holds only files)`, PARTIAL_HINT);
  }
  const names = new Set(entries.map((e) => e.name));
  if (!names.has('manifest.json')) throw refuse(`${at('manifest.json')}: missing, not a finished provider directory`, PARTIAL_HINT);
  if (!names.has('version.txt')) throw refuse(`${at('version.txt')}: missing, not a finished provider directory`, PARTIAL_HINT);
  const manifestText = await readFile(join(dir, 'manifest.json'), 'utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(manifestText);
  } catch (err) {
    throw refuse(`${at('manifest.json')}: not JSON: ${describe(err)}`, PARTIAL_HINT);
  }
  const manifest = checkManifest(parsed, provider, at('manifest.json'));
  const signed = manifest.signingKey !== null;

  // What the manifest accounts for; anything else is refused.
  const expected = new Set(['manifest.json', 'version.txt']);
  for (const a of manifest.artifacts) {
    for (const f of [a.name, `${a.name}.DIGESTS`]) {
      if (!names.has(f)) throw refuse(`${at(f)}: missing (listed in manifest.json)`, PARTIAL_HINT);
      expected.add(f);
    }
    for (const f of [`${a.name}.sig`, `${a.name}.DIGESTS.asc`]) {
      if (signed && !names.has(f)) throw refuse(`${at(f)}: missing (manifest.json says the artifacts are signed)`, PARTIAL_HINT);
      if (names.has(f)) expected.add(f);
    }
  }
  for (const n of names) {
    if (!expected.has(n)) throw refuse(`${at(n)}: not an artifact of manifest.json nor what is published beside one`, 'remove it, or rebuild that group');
  }

  const files = new Map<string, string>();
  const byName = new Map(manifest.artifacts.map((a) => [a.name, a]));
  // Artifacts are large: hashed a few at once; the rest are small.
  const ordered = [...names].sort();
  await mapInOrder(ordered, Math.max(1, Math.min(availableParallelism(), 4)), async (n) => {
    const a = byName.get(n);
    const { hex, size } = await hashFile(join(dir, n), a ? ['md5', 'sha1', 'sha512'] : ['sha512']);
    files.set(n, hex.sha512);
    if (!a) return;
    if (size !== a.size) throw mismatch(`${at(n)}: ${size} bytes, manifest.json says ${a.size}`);
    if (hex.sha512 !== a.sha512) throw mismatch(`${at(n)}: sha512 ${hex.sha512.slice(0, 16)}..., manifest.json says ${a.sha512.slice(0, 16)}...`);
    const want = digestsText([{ name: n, md5: hex.md5, sha1: hex.sha1, sha512: hex.sha512 }]);
    const have = await readFile(join(dir, `${n}.DIGESTS`), 'utf8');
    if (have !== want) throw mismatch(`${at(`${n}.DIGESTS`)}: does not match the artifact's bytes`);
  });
  return { group, provider, dir, manifest, manifestText, files: new Map([...files].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) };
}
