/**
 * System extensions: made by oem's squashfs writer and mkfs.erofs, read back without root (unsquashfs,
 * dump.erofs, a disk image's partition table), and the merge rules checked against systemd-sysext
 * itself (as root, in a private mount namespace with a tmpfs on /run).
 */
import { execa } from 'execa';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeExtension, type SysextFormat } from '../src/sysext/make.js';
import { extensionFormat, readExtension } from '../src/sysext/read.js';
import { boardArchitecture, mergeVerdict, type Keys } from '../src/sysext/release.js';
import { sparseCopyInto } from '../src/image/sparse.js';
import { extensionTree, testExtension } from './helpers/sysext.js';

const isRoot = process.getuid?.() === 0;
const MTIME = 1_700_000_000;
let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oem-sysext-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const tree = (name: string, release: string | undefined) => extensionTree(dir, name, release);
const made = (name: string, release: string | undefined, format: SysextFormat = 'squashfs') => testExtension(dir, name, release, format);

const FLATCAR_OS: Keys = { ID: 'flatcar', ID_LIKE: 'coreos', VERSION_ID: '4593.1.0', SYSEXT_LEVEL: '1.0' };

describe('making and reading extensions', () => {
  for (const format of ['squashfs', 'erofs'] as const) {
    it(`${format}: the same tree gives the same bytes, and the extension-release reads back`, async () => {
      const release = 'ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n';
      const t = await tree('acme', release);
      const a = join(dir, `a-${++n}.raw`);
      const b = join(dir, `b-${++n}.raw`);
      await makeExtension(t, a, { format, mtime: MTIME, name: 'acme' });
      await makeExtension(t, b, { format, mtime: MTIME, name: 'acme' });
      expect((await readFile(a)).equals(await readFile(b))).toBe(true);
      expect(await extensionFormat(a)).toBe(format);
      expect(await readExtension(a, 'acme')).toEqual({ format, release: { ID: 'flatcar', SYSEXT_LEVEL: '1.0', ARCHITECTURE: 'x86-64' } });
      // Another name has no extension-release of its own: systemd-sysext would refuse it under that name.
      expect(await readExtension(a, 'other')).toEqual({ format });
      // Every file is root's, as the independent tools list it.
      const listing = format === 'squashfs' ? (await execa('unsquashfs', ['-lln', a])).stdout : (await execa('dump.erofs', ['--path=/usr/lib/systemd/system/acme-marker.service', a])).stdout;
      expect(listing).toMatch(format === 'squashfs' ? /0\/0 .*acme-marker\.service/ : /Uid: 0\s+Gid: 0/);
      if (format === 'erofs') await execa('fsck.erofs', [a]);
    });
  }

  it('reads a squashfs made by mksquashfs as Flatcar makes its own (fragments, xz, xattrs), not only oem\'s', async () => {
    const t = await tree('oem-acme', 'ID=flatcar\nVERSION_ID=4593.1.0\nARCHITECTURE=x86-64\n');
    const img = join(dir, `mksquashfs-${++n}.raw`);
    await execa('mksquashfs', [t, img, '-all-root', '-noappend', '-no-progress', '-quiet', '-comp', 'xz', '-xattrs']);
    expect(await extensionFormat(img)).toBe('squashfs');
    expect(await readExtension(img, 'oem-acme')).toEqual({ format: 'squashfs', release: { ID: 'flatcar', VERSION_ID: '4593.1.0', ARCHITECTURE: 'x86-64' } });
  });

  it('reads a signed disk image: EROFS in a root partition, dm-verity and a signature partition', async () => {
    const fsImg = await made('oem-azure', 'ID=flatcar\nVERSION_ID=4628.0.0\nARCHITECTURE=x86-64\nSYSEXT_ID=oem-azure\n', 'erofs');
    const hash = join(dir, `hash-${++n}`);
    const { stdout } = await execa('veritysetup', ['format', fsImg, hash]);
    const rootHash = /Root hash:\s*([0-9a-f]+)/.exec(stdout)![1]!;
    const sig = Buffer.alloc(16 * 1024);
    sig.write(JSON.stringify({ rootHash, certificateFingerprint: 'ab'.repeat(32), signature: Buffer.from('not checked here').toString('base64') }));
    const sigFile = join(dir, `sig-${++n}`);
    await writeFile(sigFile, sig);
    const ddi = join(dir, `ddi-${++n}.raw`);
    const MiB = 1024 * 1024;
    await writeFile(ddi, '');
    await execa('truncate', ['-s', String(8 * MiB), ddi]);
    await execa('sgdisk', ['-o', '-n', '1:2048:+4M', '-t', '1:4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709', '-n', '2:0:+1M', '-t', '2:2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5', '-n', '3:0:+64K', '-t', '3:41092B05-9FC8-4523-994F-2DEF0408B176', ddi]);
    const first = async (p: number) => Number(/First sector: (\d+)/.exec((await execa('sgdisk', ['-i', String(p), ddi])).stdout)![1]) * 512;
    await sparseCopyInto(fsImg, ddi, await first(1));
    await sparseCopyInto(hash, ddi, await first(2));
    await sparseCopyInto(sigFile, ddi, await first(3));
    const r = await readExtension(ddi, 'oem-azure');
    expect(r).toEqual({
      format: 'disk-image',
      disk: { filesystem: 'erofs', architecture: 'x86-64', partition: 'root', verity: true, signed: true },
      release: { ID: 'flatcar', VERSION_ID: '4628.0.0', ARCHITECTURE: 'x86-64', SYSEXT_ID: 'oem-azure' },
    });
  });

  it('says what is wrong with what is not an extension, and never reads outside the image', async () => {
    const junk = join(dir, `junk-${++n}.raw`);
    await writeFile(junk, Buffer.alloc(4096, 7));
    expect(await readExtension(junk, 'junk')).toEqual({ format: 'unknown', error: 'not a squashfs, EROFS or disk image' });
    const ok = await made('acme', 'ID=flatcar\n');
    expect((await readExtension(ok, '../../etc/passwd')).error).toMatch(/not a name systemd-sysext uses/);
    expect((await readExtension(ok, '-x')).error).toMatch(/not a name/);
    // An extension-release that is a link to a host file: the image's own namespace, never the host's.
    const t = await tree('linked', undefined);
    await mkdir(join(t, 'usr/lib/extension-release.d'), { recursive: true });
    await symlink('/etc/os-release', join(t, 'usr/lib/extension-release.d/extension-release.linked'));
    for (const format of ['squashfs', 'erofs'] as const) {
      const img = join(dir, `linked-${++n}.raw`);
      await makeExtension(t, img, { format, mtime: MTIME, name: 'linked' });
      const r = await readExtension(img, 'linked');
      expect(r.release?.ID, format).toBeUndefined();
    }
    // A huge extension-release is refused, not read whole.
    const big = await made('big', `ID=flatcar\n#${'x'.repeat(200_000)}\n`);
    expect((await readExtension(big, 'big')).error).toBeDefined();
    const bigErofs = await made('big', `ID=flatcar\n#${'x'.repeat(200_000)}\n`, 'erofs');
    expect((await readExtension(bigErofs, 'big')).error).toMatch(/larger than|compressed/);
  });
});

/** [what, extension-release (undefined: none), merges on Flatcar 4593.1.0 amd64] */
const CASES: [string, string | undefined, boolean][] = [
  ['ID and SYSEXT_LEVEL, right architecture', 'ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n', true],
  ['another architecture', 'ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=arm64\n', false],
  ['another OS', 'ID=fedora\nSYSEXT_LEVEL=1.0\n', false],
  ['ID=_any', 'ID=_any\n', true],
  ['ARCHITECTURE=_any', 'ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=_any\n', true],
  ['another SYSEXT_LEVEL', 'ID=flatcar\nSYSEXT_LEVEL=2.0\n', false],
  ['the same VERSION_ID', 'ID=flatcar\nVERSION_ID=4593.1.0\n', true],
  ['another VERSION_ID (another release)', 'ID=flatcar\nVERSION_ID=4459.2.0\n', false],
  ['no version at all', 'ID=flatcar\n', false],
  ['no ID', 'SYSEXT_LEVEL=1.0\n', false],
  ['the initrd scope only', 'ID=flatcar\nSYSEXT_LEVEL=1.0\nSYSEXT_SCOPE=initrd\n', false],
  ['no extension-release', undefined, false],
];

describe('merge rules', () => {
  it('follow systemd-sysext, case by case', () => {
    for (const [what, release, merges] of CASES) {
      const keys = release === undefined ? undefined : Object.fromEntries(release.trim().split('\n').map((l) => l.split('=') as [string, string]));
      const v = mergeVerdict('acme', keys, FLATCAR_OS, 'x86-64');
      expect(v.merges, `${what}: ${v.reason}`).toBe(merges);
      expect(v.reason).toContain('acme');
    }
    // ID_LIKE (systemd 254 and later): Flatcar is like coreos.
    expect(mergeVerdict('x', { ID: 'coreos', SYSEXT_LEVEL: '1.0' }, FLATCAR_OS, 'x86-64').merges).toBe(true);
    expect(boardArchitecture('amd64-usr')).toBe('x86-64');
    expect(boardArchitecture('arm64-usr')).toBe('arm64');
  });

  it.runIf(isRoot)('[root] agree with systemd-sysext merge on a tree with Flatcar\'s os-release', { timeout: 120_000 }, async () => {
    const root = join(dir, `root-${++n}`);
    await mkdir(join(root, 'usr/lib/systemd/system'), { recursive: true });
    await mkdir(join(root, 'etc/extensions'), { recursive: true });
    await writeFile(join(root, 'usr/lib/os-release'), Object.entries(FLATCAR_OS).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
    const names = CASES.map((_, i) => `case${i}`);
    const store = join(dir, `store-${++n}`);
    await mkdir(store);
    for (const [i, [, release]] of CASES.entries()) {
      await makeExtension(await tree(names[i]!, release), join(store, `${names[i]}.raw`), { format: i % 2 ? 'erofs' : 'squashfs', mtime: MTIME, name: names[i]! });
    }
    // One extension at a time (systemd-sysext gives up on the whole merge for one without an
    // extension-release); its unit file appears under usr/ only when systemd-sysext merged it.
    const script = [
      'set -e; mount -t tmpfs tmpfs /run',
      'for f in "$2"/*.raw; do',
      '  rm -f "$1"/etc/extensions/*; cp "$f" "$1/etc/extensions/"',
      '  systemd-sysext --root="$1" merge >/dev/null 2>&1 || true',
      '  ls "$1/usr/lib/systemd/system"',
      '  systemd-sysext --root="$1" unmerge >/dev/null 2>&1 || true',
      'done',
      'ls "$1/usr/lib/systemd/system" | wc -l',
    ].join('\n');
    const r = await execa('unshare', ['-m', '--propagation', 'shared', 'sh', '-c', script, 'sh', root, store]);
    const lines = r.stdout.trim().split('\n');
    const after = Number(lines.pop());
    const merged = new Set(lines.map((l) => l.replace(/-marker\.service$/, '')));
    for (const [i, [what, release, merges]] of CASES.entries()) {
      const keys = release === undefined ? undefined : Object.fromEntries(release.trim().split('\n').map((l) => l.split('=') as [string, string]));
      expect(merged.has(names[i]!), `systemd-sysext on "${what}"`).toBe(merges);
      expect(mergeVerdict(names[i]!, keys, FLATCAR_OS, 'x86-64').merges, `oem on "${what}"`).toBe(merges);
    }
    // unmerge left the tree as it was, and nothing mounted.
    expect(after).toBe(0);
    expect((await readFile('/proc/self/mounts', 'utf8')).includes(root)).toBe(false);
  });
});

describe('grub.cfg on OEM', () => {
  it("accepts Flatcar's per-platform files and refuses every other command", async () => {
    const { readdir: list } = await import('node:fs/promises');
    const { checkGrub } = await import('../src/providers/validate.js');
    const templates = new URL('../templates/', import.meta.url);
    const platforms = (await list(templates)).filter((d) => !d.startsWith('_'));
    let seen = 0;
    for (const d of platforms) {
      const text = await readFile(new URL(`${d}/flatcar/grub.cfg`, templates), 'utf8').catch(() => null);
      if (text === null) continue;
      seen++;
      expect(checkGrub(text), d).toEqual([]);
    }
    expect(seen).toBeGreaterThanOrEqual(4);
    for (const [text, why] of [
      ['insmod evil', /line 1 is not a line oem accepts/],
      ['linux /boot/vmlinuz init=/bin/sh', /line 1 is not a line oem accepts/],
      ['set linux_append="$(reboot)"', /line 1 is not a line oem accepts/],
      ['serial --unit=0; reboot', /line 1 is not a line oem accepts/],
      ['if [ -e /x ]; then\nfi', /line 1 is not a line oem accepts/],
      ['if [ "$grub_cpu" = arm64 ]; then\nset a="b"', /an if block is not closed with fi/],
      ['fi', /line 1: fi without an if/],
      ['else', /line 1: else without an if/],
    ] as const) {
      expect(checkGrub(text).join('; '), text).toMatch(why);
    }
  });
});
