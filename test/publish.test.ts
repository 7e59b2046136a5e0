/** oem publish: groups of one release (several oem build runs) gathered, checked, indexed and signed. */
import { execa } from 'execa';
import { access, mkdir, mkdtemp, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { BuildResult } from '../src/build.js';
import type { ReleaseIndex } from '../src/publish/index-file.js';
import { expectCleanError, oem, oemJson } from './helpers/cli.js';
import { mirrorArgs, next, sha512, useBuildEnv, work } from './helpers/build-env.js';

useBuildEnv();

const EPOCH = '1700000000';
const IMG = (p: string) => `flatcar_production_${p}_image.bin.bz2`;
const exists = (p: string) => access(p).then(() => true, () => false);

async function build(out: string, providers: string[], extra: string[] = []): Promise<void> {
  const r = await oemJson<BuildResult>(['build', ...providers.flatMap((p) => ['--provider', p]), '--format', 'raw', ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent', ...extra], { env: { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: EPOCH } });
  expect(r.result.exitCode, r.result.stderr).toBe(0);
}

/** A copy of a group, to damage. */
async function copy(group: string): Promise<string> {
  const dst = join(work, `copy-${next()}`);
  await execa('cp', ['-a', '--reflink=auto', group, dst]);
  return dst;
}

async function editManifest(file: string, edit: (m: Record<string, unknown>) => void): Promise<void> {
  const m = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  edit(m);
  await writeFile(file, JSON.stringify(m, null, 2) + '\n');
}

/** Files of a directory tree (relative paths) with their sha512. */
async function tree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) {
      const p = join(e.parentPath, e.name);
      out[p.slice(dir.length + 1)] = await sha512(p);
    }
  }
  return out;
}

let g1: string;
let g2: string;
let single: string;

describe('oem publish', () => {
  beforeAll(async () => {
    g1 = join(work, 'g1');
    g2 = join(work, 'g2');
    single = join(work, 'single');
    // The first build fetches the release into the cache; the others read it.
    await build(g1, ['qemu']);
    await Promise.all([build(g2, ['gce', 'digitalocean']), build(single, ['qemu', 'gce', 'digitalocean'])]);
  });

  it('gathers two groups into what one build of all their providers writes, with an index, hard-linked', async () => {
    const out = join(work, `release-${next()}`);
    const r = await oemJson<ReleaseIndex>(['publish', g1, g2, '--output-dir', out]);
    expect(r.result.exitCode, r.result.stderr).toBe(0);
    const built = await tree(single);
    const published = await tree(out);
    const { 'index.json': indexSum, SHA512SUMS: sumsSum, ...providers } = published;
    expect(indexSum).toBeDefined();
    expect(sumsSum).toBeDefined();
    expect(providers).toEqual(built);
    expect(Object.keys(providers).filter((f) => f.endsWith('.bin.bz2')).sort()).toEqual(['digitalocean', 'gce', 'qemu'].map((p) => `${p}/${IMG(p)}`));

    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as ReleaseIndex;
    expect(r.json).toEqual(index);
    expect(index).toMatchObject({ distro: 'flatcar', board: 'amd64-usr', signed: false, signingKey: null, providers: ['digitalocean', 'gce', 'qemu'] });
    for (const a of index.artifacts) {
      expect(a.sha512).toBe(built[a.path]);
      expect(a.signature).toBeNull();
    }
    expect(await readFile(join(out, 'SHA512SUMS'), 'utf8')).toBe(index.artifacts.map((a) => `${a.sha512}  ${a.path}\n`).join(''));
    await execa('sha512sum', ['--quiet', '-c', 'SHA512SUMS'], { cwd: out });
    // Same file system: the artifacts are the groups' own files.
    expect((await stat(join(out, 'qemu', IMG('qemu')))).ino).toBe((await stat(join(g1, 'qemu', IMG('qemu')))).ino);
    expect(await readdir(work)).not.toContainEqual(expect.stringMatching(/oem-tmp/));

    // A provider in two groups, byte-identical: taken once.
    const again = join(work, `release-${next()}`);
    const dup = await oem(['publish', g1, await copy(g1), g2, '--output-dir', again]);
    expect(dup.exitCode, dup.stderr).toBe(0);
    expect(await tree(again)).toEqual(published);
    // An existing empty OUT is fine.
    const empty = join(work, `release-${next()}`);
    await mkdir(empty);
    expect((await oem(['publish', g1, '--output-dir', empty])).exitCode).toBe(0);
    expect((await readdir(empty)).sort()).toEqual(['SHA512SUMS', 'index.json', 'qemu']);
  });

  /** A refusal: one line naming the group and the file, the exit code, and no OUT (nor a temporary one). */
  async function refused(groups: string[], code: number, message: RegExp, out = join(work, `refused-${next()}`)): Promise<void> {
    const existed = await exists(out);
    const r = await oem(['publish', ...groups, '--output-dir', out]);
    expect(r.exitCode, r.stderr).toBe(code);
    expect(expectCleanError(r)).toMatch(message);
    expect(r.stderr).toMatch(/^hint: /m);
    expect(await exists(out)).toBe(existed);
  }
  /** Refusals run at once; then no temporary release is left anywhere. */
  async function allRefused(...runs: Promise<void>[]): Promise<void> {
    await Promise.all(runs);
    expect(await readdir(work)).not.toContainEqual(expect.stringMatching(/oem-tmp/));
  }

  it('refuses a tampered artifact, a missing one, a leftover of an unfinished build, and leaves OUT absent', async () => {
    const [tampered, missing, digests, partial, noManifest, stray] = await Promise.all([copy(g1), copy(g2), copy(g1), copy(g1), copy(g2), copy(g1)]);
    const fh = await open(join(tampered, 'qemu', IMG('qemu')), 'r+');
    await fh.write(Buffer.from('X'), 0, 1, 100);
    await fh.close();
    await rm(join(missing, 'gce', IMG('gce')));
    await writeFile(join(digests, 'qemu', `${IMG('qemu')}.DIGESTS`), '# SHA512 HASH\n00  x\n');
    await mkdir(join(partial, '.gce.oem-tmp-4242'));
    await rm(join(noManifest, 'digitalocean', 'manifest.json'));
    await writeFile(join(stray, 'qemu', 'flatcar_production_qemu_image.qcow2.bz2'), 'half an artifact');
    await allRefused(
      refused([g2, tampered], 4, new RegExp(`^${tampered}: qemu/${IMG('qemu').replace(/\./g, '\\.')}: sha512 [0-9a-f]{16}\\.\\.\\., manifest\\.json says [0-9a-f]{16}\\.\\.\\.$`)),
      refused([g1, missing], 2, new RegExp(`^${missing}: gce/${IMG('gce').replace(/\./g, '\\.')}: missing \\(listed in manifest\\.json\\)$`)),
      refused([digests], 4, /: qemu\/flatcar_production_qemu_image\.bin\.bz2\.DIGESTS: does not match the artifact's bytes$/),
      refused([g1, g2, noManifest], 2, new RegExp(`^${noManifest}: digitalocean/manifest\\.json: missing, not a finished provider directory$`)),
      refused([stray], 2, /: qemu\/flatcar_production_qemu_image\.qcow2\.bz2: not an artifact of manifest\.json/),
      refused([partial, g2], 2, new RegExp(`^${partial}: \\.gce\\.oem-tmp-4242: left over from an unfinished or interrupted build$`)),
    );
  });

  it('refuses groups of another version or base, a provider that differs between groups, and an existing OUT', async () => {
    const [other, otherBase, differs] = await Promise.all([copy(g2), copy(g2), copy(g1)]);
    for (const p of ['gce', 'digitalocean']) await editManifest(join(other, p, 'manifest.json'), (m) => (m.version = '9999.0.0'));
    await editManifest(join(otherBase, 'gce', 'manifest.json'), (m) => ((m.base as { sha512: string }).sha512 = '0'.repeat(128)));
    await editManifest(join(differs, 'qemu', 'manifest.json'), (m) => (m.createdAt = '2030-01-01T00:00:00.000Z'));
    const old = join(work, `old-${next()}`);
    await mkdir(old);
    await writeFile(join(old, 'keep'), 'an older release\n');
    await allRefused(
      refused([g1, other], 2, new RegExp(`^${other}: digitalocean/manifest\\.json: version 9999\\.0\\.0, but ${g1}: qemu/manifest\\.json has [\\d.]+$`)),
      refused([g1, otherBase], 2, /: gce\/manifest\.json: base image sha512 0{128}, but /),
      refused([g1, g2, differs], 2, new RegExp(`^${differs}: qemu/manifest\\.json: the provider qemu is also in ${g1}, and differs$`)),
      refused([g1, g2], 2, new RegExp(`^--output-dir ${old}: exists and is not empty$`), old),
      refused([g1], 2, /is a group of the release/, join(g1, 'release')),
    );
    expect(await readdir(old)).toEqual(['keep']);
    expect(await exists(join(g1, 'release'))).toBe(false);
  });

  it('Ctrl-C: nothing under OUT\'s name, and no temporary release left', async () => {
    const { BIN } = await import('./helpers/cli.js');
    const out = join(work, `interrupted-${next()}`);
    const child = execa(process.execPath, [BIN, 'publish', g1, g2, '--output-dir', out], { reject: false, stdin: 'ignore', env: { OEM_DEBUG_PAUSE_BEFORE_RENAME_MS: '20000' } });
    const tmp = async () => (await readdir(work)).find((f) => f.startsWith(`.${basename(out)}.oem-tmp-`));
    const deadline = Date.now() + 15_000;
    let t: string | undefined;
    while (Date.now() < deadline && !(t = await tmp())) await new Promise((r) => setTimeout(r, 20));
    expect(t).toBeDefined();
    // The whole release is there, under its temporary name.
    while (Date.now() < deadline && !(await exists(join(work, t!, 'SHA512SUMS')))) await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(130);
    expect(await exists(out)).toBe(false);
    expect(await tmp()).toBeUndefined();
  });

  it('--sign-key: every artifact signed anew as oem build --sign-key does, the index clearsigned; the key in no output', async () => {
    const gnupg = await mkdtemp(join(work, 'gpg-'));
    const env = { GNUPGHOME: gnupg };
    await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', 'Releaser <releaser@example.org>', 'ed25519', 'sign', 'never'], { env });
    const secret = join(work, `secret-${next()}.asc`);
    const secretText = (await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--export-secret-keys', '--armor'], { env })).stdout;
    await writeFile(secret, secretText);
    const pub = join(work, `public-${next()}.asc`);
    await writeFile(pub, (await execa('gpg', ['--batch', '--export', '--armor'], { env })).stdout);

    const out = join(work, `signed-${next()}`);
    const r = await oemJson<ReleaseIndex>(['publish', g1, g2, '--output-dir', out, '--sign-key', secret], { env: { SOURCE_DATE_EPOCH: EPOCH } });
    expect(r.result.exitCode, r.result.stderr).toBe(0);
    const body = secretText.split('\n').filter((l) => l.length > 40)[1]!;
    expect(r.result.stdout + r.result.stderr).not.toContain(body);
    expect(r.json).toMatchObject({ signed: true, signingKey: { fingerprint: expect.stringMatching(/^[0-9A-F]{40}$/) } });
    await Promise.all(r.json.artifacts.map(async (a) => {
      expect(a.signature).toBe(`${a.path}.sig`);
      const img = join(out, a.path);
      await execa('gpg', ['--batch', '--verify', `${img}.sig`, img], { env });
      await execa('gpg', ['--batch', '--verify', `${img}.DIGESTS.asc`], { env });
      const v = await oemJson<{ verified: boolean }>(['verify', img, '--key', pub]);
      expect(v.json.verified, v.result.stderr).toBe(true);
      const m = JSON.parse(await readFile(join(out, a.provider, 'manifest.json'), 'utf8')) as { signingKey: unknown };
      expect(m.signingKey).toEqual(r.json.signingKey);
    }));
    for (const f of ['index.json.asc', 'SHA512SUMS.asc']) await execa('gpg', ['--batch', '--verify', join(out, f)], { env });
    expect(await readFile(join(out, 'index.json.asc'), 'utf8')).toContain(await readFile(join(out, 'index.json'), 'utf8'));
    // The groups are left as they were: their files unsigned, their manifests unchanged.
    expect(await exists(join(g1, 'qemu', `${IMG('qemu')}.sig`))).toBe(false);
    expect(JSON.parse(await readFile(join(g1, 'qemu', 'manifest.json'), 'utf8'))).toMatchObject({ signingKey: null });

    // A signed release published again without --sign-key: its signatures are carried over only once
    // they verify against the signer's public key (--key), and by the key the manifests name.
    const unchecked = await oem(['publish', out, '--output-dir', join(work, `unchecked-${next()}`)]);
    expect(unchecked.exitCode).toBe(2);
    expect(expectCleanError(unchecked)).toMatch(/: digitalocean is signed, and oem publish does not pass on signatures it has not checked$/);
    expect(unchecked.stderr).toContain('hint: give the signer\'s public key with --key FILE');
    const carried = join(work, `carried-${next()}`);
    const c = await oemJson<ReleaseIndex>(['publish', out, '--output-dir', carried, '--key', pub]);
    expect(c.result.exitCode, c.result.stderr).toBe(0);
    expect(c.json).toEqual(r.json);
    await execa('gpg', ['--batch', '--verify', join(carried, 'qemu', `${IMG('qemu')}.sig`), join(carried, 'qemu', IMG('qemu'))], { env });
    // Another key: refused (exit 4), nothing published.
    const otherKey = join(work, `other-${next()}.asc`);
    await writeFile(otherKey, inject('fixtures').key.armoredPublic);
    const wrongOut = join(work, `wrong-${next()}`);
    const wrong = await oem(['publish', out, '--output-dir', wrongOut, '--key', otherKey]);
    expect(wrong.exitCode).toBe(4);
    expect(expectCleanError(wrong)).toMatch(/digitalocean\/flatcar_production_digitalocean_image\.bin\.bz2: signed by unknown key [0-9A-F]+, not by /);
    expect(await exists(wrongOut)).toBe(false);
    // A signature swapped for another artifact's: the bytes are not what it signed (exit 4).
    const swapped = await copy(out);
    await execa('cp', [join(swapped, 'qemu', `${IMG('qemu')}.sig`), join(swapped, 'gce', `${IMG('gce')}.sig`)]);
    const sw = await oem(['publish', swapped, '--output-dir', join(work, `swapped-${next()}`), '--key', pub]);
    expect(sw.exitCode).toBe(4);
    expect(expectCleanError(sw)).toMatch(/gce\/flatcar_production_gce_image\.bin\.bz2: BAD signature/);
    // A public key is not a signing key: refused before anything is read.
    const bad = await oem(['publish', g1, '--output-dir', join(work, `bad-${next()}`), '--sign-key', pub]);
    expect(bad.exitCode).toBe(2);
    expect(expectCleanError(bad)).toMatch(/is a public key; --sign-key needs the secret key/);
  });
});
