/**
 * `oem publish`: the groups of a release built in several `oem build` runs, checked, then gathered
 * into one release directory with an index. Nothing is written before every group is checked; the
 * release is put together in a temporary directory beside OUT and renamed into place at the end, so
 * OUT's name shows either nothing or the whole release (Ctrl-C included).
 */
import { checkOutputDir, makeOutputDir } from '../output-dir.js';
import { lstat, mkdir, readFile, readdir, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, isAbsolute } from 'node:path';
import { clearsign, loadSigningKey, signFile, type SigningKey } from '../artifacts/sign.js';
import { acquire } from '../cleanup.js';
import { OemError } from '../shared/errors.js';
import { checkCarriedSignatures } from './carried-signatures.js';
import { combine } from './combine.js';
import { readGroup } from './group.js';
import { indexJson, releaseIndex, sha512sums, type ReleaseIndex } from './index-file.js';
import { linkOrCopy } from './place.js';
import { refuse } from './refuse.js';

export interface PublishOptions {
  groups: string[];
  outputDir: string;
  signKey?: string;
  signPassphrase?: string;
  /** Public keys the groups' own signatures must verify against when they are carried over (no signKey). */
  keys?: string[];
  log?: (line: string) => void;
}

export interface PublishResult {
  outputDir: string;
  index: ReleaseIndex;
  /** Files hard-linked from the groups, and files copied (another file system). */
  linked: number;
  copied: number;
}

/** The names written at the top of the release directory. */
export const INDEX = 'index.json';
export const SUMS = 'SHA512SUMS';

const within = (dir: string, p: string) => {
  const r = relative(dir, p);
  return r === '' || (!r.startsWith('..') && !isAbsolute(r));
};

async function checkOutput(out: string, given: string, groups: string[]): Promise<void> {
  const hint = 'publish into a new directory: a release is not merged into another';
  const st = await lstat(out).catch(() => null);
  if (st && (!st.isDirectory() || (await readdir(out)).length > 0)) throw refuse(`--output-dir ${given}: exists and is not empty`, hint);
  for (const g of groups) {
    if (within(resolve(g), out) || within(out, resolve(g))) throw refuse(`--output-dir ${given}: ${g} is a group of the release; the release goes elsewhere`, hint);
  }
}

export async function publishRelease(opts: PublishOptions): Promise<PublishResult> {
  const log = opts.log ?? (() => {});
  // The signing key is checked before anything else, as oem build does.
  const signer = opts.signKey ? await loadSigningKey(opts.signKey, opts.signPassphrase) : null;
  const out = resolve(opts.outputDir);
  await checkOutput(out, opts.outputDir, opts.groups);
  await checkOutputDir(dirname(out));

  const groups = [];
  for (const g of opts.groups) {
    log(`checking ${g}`);
    groups.push(await readGroup(g));
  }
  const release = combine(groups);
  // Signatures passed on as they are must verify first; signing anew replaces them.
  if (!signer) await checkCarriedSignatures(release.providers, opts.keys ?? [], log);

  const parent = dirname(out);
  await makeOutputDir(parent);
  const tmp = join(parent, `.${basename(out)}.oem-tmp-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp);
  const releaseTmp = acquire(`temporary release ${tmp}`, () => rm(tmp, { recursive: true, force: true }));
  // Released first on Ctrl-C (newest first): no rename once the temporary release is being removed.
  let interrupted = false;
  const releaseGuard = acquire(`publishing ${out}`, () => {
    interrupted = true;
  });
  try {
    let linked = 0;
    let copied = 0;
    for (const p of release.providers) {
      log(`${p.provider}: from ${p.group}`);
      const dst = join(tmp, p.provider);
      await mkdir(dst);
      for (const f of p.files.keys()) {
        // Signing anew: the groups' signatures and manifest are replaced.
        if (signer && (f.endsWith('.sig') || f.endsWith('.DIGESTS.asc') || f === 'manifest.json')) continue;
        if ((await linkOrCopy(join(p.dir, f), join(dst, f))) === 'link') linked++;
        else copied++;
      }
      if (signer) await sign(p.manifest.artifacts.map((a) => a.name), dst, signer, log, p.provider);
      if (signer) {
        const m = JSON.parse(p.manifestText) as Record<string, unknown>;
        m.signingKey = { fingerprint: signer.fingerprint, signingKeyFingerprint: signer.signingKeyFingerprint };
        p.manifest.signingKey = { fingerprint: signer.fingerprint, signingKeyFingerprint: signer.signingKeyFingerprint };
        await writeFile(join(dst, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
      }
    }
    const index = releaseIndex(release, (provider, name) => signer !== null || (release.providers.find((p) => p.provider === provider)?.files.has(`${name}.sig`) ?? false));
    const json = indexJson(index);
    const sums = sha512sums(index);
    await writeFile(join(tmp, INDEX), json);
    await writeFile(join(tmp, SUMS), sums);
    if (signer) {
      await writeFile(join(tmp, `${INDEX}.asc`), await clearsign(json, signer));
      await writeFile(join(tmp, `${SUMS}.asc`), await clearsign(sums, signer));
    }
    // For the tests of Ctrl-C: the whole release in the temporary directory, not yet renamed.
    const pause = Number(process.env.OEM_DEBUG_PAUSE_BEFORE_RENAME_MS ?? 0);
    if (pause > 0) await new Promise((r) => setTimeout(r, pause));
    // Checked again: another process may have made OUT meanwhile.
    await checkOutput(out, opts.outputDir, []);
    if (interrupted) throw new OemError('interrupted', { code: 'interrupted' });
    await rmdir(out).catch(() => undefined);
    await rename(tmp, out);
    return { outputDir: out, index, linked, copied };
  } finally {
    await releaseGuard();
    await releaseTmp();
  }
}

/** A detached .sig per artifact and a clearsigned .DIGESTS.asc, as oem build --sign-key writes them. */
async function sign(names: string[], dir: string, signer: SigningKey, log: (l: string) => void, provider: string): Promise<void> {
  for (const n of names) {
    log(`${provider}: signing ${n}`);
    await writeFile(join(dir, `${n}.sig`), await signFile(join(dir, n), signer));
    await writeFile(join(dir, `${n}.DIGESTS.asc`), await clearsign(await readFile(join(dir, `${n}.DIGESTS`), 'utf8'), signer));
  }
}
