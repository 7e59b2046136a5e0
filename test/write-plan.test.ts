/**
 * Plans applied to OEM (ext4 and btrfs) and ROOT by both backends give the same files, owners and
 * modes, and clean filesystems. Tests named [root] need root.
 */
import { execa } from 'execa';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { releaseAll } from '../src/cleanup.js';
import { hostFile } from '../src/shared/safe-fs.js';
import { OemError } from '../src/shared/errors.js';
import { applyPlan, partitionTargets } from '../src/write/apply.js';
import { normalizePlan, type WritePlan } from '../src/write/plan.js';
import { buildTestImage } from '../scripts/lib/test-image.js';
import { fsck, isRoot, leftovers, part, readTree, type Node } from './helpers/image-read.js';

const fixtures = inject('fixtures');
let work: string;
let n = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-plan-test-'));
  process.env.OEM_TMPDIR = work;
});
afterAll(async () => {
  await releaseAll();
  await rm(work, { recursive: true, force: true });
});

const plan: WritePlan = {
  partitions: {
    oem: [
      { kind: 'file', path: '/grub.cfg', content: Buffer.from('set oem_id="ec2"\n'), mode: 0o644, uid: 0, gid: 0 },
      { kind: 'dir', path: '/bin', mode: 0o755, uid: 0, gid: 0 },
      { kind: 'file', path: '/bin/oem-agent', content: Buffer.alloc(300_000, 7), mode: 0o755, uid: 0, gid: 0 },
      { kind: 'file', path: '/system/oem.target', content: Buffer.from('[Unit]\nDescription=OEM\n'), mode: 0o644, uid: 0, gid: 0 },
      { kind: 'file', path: '/secret/token', content: Buffer.from('s3cret\n'), mode: 0o600, uid: 500, gid: 501 },
      { kind: 'symlink', path: '/system/link.service', target: '/usr/share/oem/system/real.service', uid: 0, gid: 0 },
    ],
    root: [
      { kind: 'dir', path: '/var/lib/oem-agent', mode: 0o700, uid: 0, gid: 0 },
      { kind: 'file', path: '/etc/oem/config.yml', content: Buffer.from('version: 1\n'), mode: 0o640, uid: 0, gid: 10 },
    ],
  },
};

function expectPlanApplied(oemTree: Map<string, Node>, rootTree: Map<string, Node>): void {
  expect(oemTree.get('/grub.cfg')).toMatchObject({ type: 'file', mode: 0o644, uid: 0, gid: 0, content: 'set oem_id="ec2"\n' });
  expect(oemTree.get('/bin')).toMatchObject({ type: 'dir', mode: 0o755 });
  expect(oemTree.get('/bin/oem-agent')).toMatchObject({ type: 'file', mode: 0o755 });
  expect(oemTree.get('/bin/oem-agent')!.content!.length).toBe(300_000);
  expect(oemTree.get('/system')).toMatchObject({ type: 'dir', mode: 0o755, uid: 0, gid: 0 });
  expect(oemTree.get('/secret/token')).toMatchObject({ type: 'file', mode: 0o600, uid: 500, gid: 501, content: 's3cret\n' });
  expect(oemTree.get('/system/link.service')).toMatchObject({ type: 'symlink', target: '/usr/share/oem/system/real.service' });
  expect(rootTree.get('/var/lib/oem-agent')).toMatchObject({ type: 'dir', mode: 0o700 });
  expect(rootTree.get('/etc/oem/config.yml')).toMatchObject({ type: 'file', mode: 0o640, uid: 0, gid: 10, content: 'version: 1\n' });
}

for (const backend of ['rootless', 'mount'] as const) {
  describe.runIf(backend === 'rootless' || isRoot)(`applyPlan, ${backend} backend${backend === 'mount' ? ' [root]' : ''}`, () => {
    for (const gen of ['coreos', 'flatcar'] as const) {
      it(`${gen}: writes OEM (${gen === 'coreos' ? 'ext4' : 'btrfs'}) and ROOT`, async () => {
        const img = join(work, `img-${n++}.bin`);
        await copyFile(fixtures[gen].raw, img);
        const before = await partitionTargets(img, ['oem']);
        await applyPlan(img, plan, backend);
        const fs = gen === 'coreos' ? 'ext4' : 'btrfs';
        const oemTree = await readTree(img, 6, fs);
        expectPlanApplied(oemTree, await readTree(img, 9, 'ext4'));
        // What the image had stays.
        expect(oemTree.get('/oem-release')).toMatchObject({ type: 'file', content: expect.stringContaining('ID=qemu') });
        expect(oemTree.get('/bin/tool')).toMatchObject({ type: 'file', mode: 0o755 });
        await fsck(img, 6, fs);
        await fsck(img, 9, 'ext4');
        // Label and UUID survive (btrfs is rebuilt by the rootless backend).
        const after = await partitionTargets(img, ['oem']);
        expect(after.oem.fs.label).toBe('OEM');
        expect(after.oem.fs.uuid).toBe(before.oem.fs.uuid);
        // Partitions other than OEM and ROOT are byte-identical.
        for (const p of [1, 2, 3, 4, 7]) {
          const { offset, size } = await part(img, p);
          const cmp = await execa('cmp', ['-i', `${offset}:${offset}`, '-n', String(size), fixtures[gen].raw, img], { reject: false });
          expect(cmp.exitCode).toBe(0);
        }
        expect(await leftovers(work)).toEqual([]);
      });
    }

    it('refuses a symlink in OEM that would lead a write out of the image', async () => {
      const img = await buildTestImage({
        path: join(work, `hostile-oem-${n++}.bin`),
        generation: 'flatcar',
        oem: [{ path: 'system', target: '/etc/systemd/system' }],
      });
      const err = await applyPlan(img.path, plan, backend).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(OemError);
      expect((err as OemError).message).toMatch(/in partition 6 \(OEM\): \/system is a symlink \(to \/etc\/systemd\/system\)/);
      expect(await leftovers(work)).toEqual([]);
    });

    it('writes a host file\'s bytes into ext4 (a path debugfs could not quote, too), and refuses one that changed since it was planned', async () => {
      const img = join(work, `host-${n++}.bin`);
      await copyFile(fixtures.coreos.raw, img);
      const dir = await mkdtemp(join(work, 'host "files" '));
      const src = join(dir, 'agent "x".bin');
      const bytes = Buffer.alloc(3 * 1024 * 1024 + 17);
      for (let i = 0; i < bytes.length; i++) bytes[i] = 32 + ((i * 7919) % 95); // printable: readTree reads text
      await writeFile(src, bytes);
      const entry = { kind: 'file', path: '/bin/oem-agent', content: await hostFile(src), mode: 0o755, uid: 0, gid: 0 } as const;
      await applyPlan(img, { partitions: { oem: [entry] } }, backend);
      const tree = await readTree(img, 6, 'ext4');
      expect(tree.get('/bin/oem-agent')).toMatchObject({ type: 'file', mode: 0o755, uid: 0, gid: 0 });
      expect(tree.get('/bin/oem-agent')!.content === bytes.toString('latin1')).toBe(true);
      await fsck(img, 6, 'ext4');
      // Planned at one size, then grown: an error naming the file, not a partition with other bytes.
      await writeFile(src, Buffer.concat([bytes, Buffer.from('more')]));
      const err = await applyPlan(img, { partitions: { oem: [entry] } }, backend).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(OemError);
      expect((err as OemError).message).toContain(`${src} changed while it was being used`);
      expect(await leftovers(work)).toEqual([]);
    });

    it('fills OEM to the brim and says how much was needed', async () => {
      const img = join(work, `big-${n++}.bin`);
      await copyFile(fixtures.coreos.raw, img);
      const big: WritePlan = { partitions: { oem: [{ kind: 'file', path: '/huge', content: Buffer.alloc(200 * 1024 * 1024, 1), mode: 0o644, uid: 0, gid: 0 }] } };
      const err = await applyPlan(img, big, backend).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(OemError);
      expect((err as OemError).code).toBe('noSpace');
      expect((err as OemError).message).toMatch(/^partition 6 \(OEM\) is full: the plan needs about 2\d{8} bytes/);
    });
  });
}

describe('plans', () => {
  it('are normalized: clean paths, parents first, missing parents added as root 0755', () => {
    const p = normalizePlan({ partitions: { oem: [{ kind: 'file', path: '//a/./b/c', content: Buffer.from('x'), mode: 0o644, uid: 0, gid: 0 }] } });
    expect(p.partitions.oem!.map((e) => [e.kind, e.path])).toEqual([
      ['dir', '/a'],
      ['dir', '/a/b'],
      ['file', '/a/b/c'],
    ]);
  });

  it('refuse relative paths, "..", bad modes and conflicting kinds', () => {
    const f = (path: string, mode = 0o644) => ({ partitions: { oem: [{ kind: 'file' as const, path, content: Buffer.alloc(0), mode, uid: 0, gid: 0 }] } });
    expect(() => normalizePlan(f('a/b'))).toThrow(/not an absolute path/);
    expect(() => normalizePlan(f('/a/../etc/passwd'))).toThrow(/has a ".." component/);
    expect(() => normalizePlan(f('/a', 0o10000))).toThrow(/outside 0-07777/);
    expect(() => normalizePlan(f('/a\nb'))).toThrow(/control characters/);
    expect(() =>
      normalizePlan({
        partitions: {
          oem: [
            { kind: 'file', path: '/a', content: Buffer.alloc(0), mode: 0o644, uid: 0, gid: 0 },
            { kind: 'file', path: '/a/b', content: Buffer.alloc(0), mode: 0o644, uid: 0, gid: 0 },
          ],
        },
      }),
    ).toThrow(/needs \/a to be a directory/);
  });
});

describe.runIf(isRoot)('the rootless backend without root (run as nobody) [root]', () => {
  it('writes ext4 ROOT through debugfs and rebuilds btrfs OEM in a user namespace, root-owned', async () => {
    const { chmod, copyFile: cp, chown, writeFile: wf } = await import('node:fs/promises');
    const dir = await mkdtemp(join(tmpdir(), 'oem-nobody-'));
    try {
      await chmod(dir, 0o777);
      const img = join(dir, 'img.bin');
      await cp(fixtures.flatcar.raw, img);
      await chown(img, 65534, 65534);
      const script = join(dir, 'run.mjs');
      // The backend as the CLI bundles it (scripts/bundle-cli.ts), readable by nobody.
      const { build } = await import('esbuild');
      const { BUNDLE_OPTIONS } = await import('../scripts/lib/bundle.js');
      const apply = join(dir, 'apply.mjs');
      await build({ ...BUNDLE_OPTIONS, entryPoints: [join(__dirname, '..', 'src', 'write', 'apply.ts')], outfile: apply });
      await wf(
        script,
        `const { applyPlan } = await import(${JSON.stringify(apply)});
await applyPlan(${JSON.stringify(img)}, {
  partitions: {
    oem: [{ kind: 'file', path: '/grub.cfg', content: Buffer.from('set oem_id="ec2"\\n'), mode: 0o644, uid: 0, gid: 0 }],
    root: [{ kind: 'file', path: '/home/core/note', content: Buffer.from('hi\\n'), mode: 0o600, uid: 1000, gid: 1000 }],
  },
}, 'rootless');
`,
      );
      const r = await execa('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, script], {
        reject: false,
        env: { ...process.env, OEM_TMPDIR: dir, HOME: dir },
      });
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      const oemTree = await readTree(img, 6, 'btrfs');
      expect(oemTree.get('/grub.cfg')).toMatchObject({ type: 'file', mode: 0o644, uid: 0, gid: 0, content: 'set oem_id="ec2"\n' });
      expect(oemTree.get('/oem-release')).toMatchObject({ uid: 0, gid: 0 });
      expect((await readTree(img, 9, 'ext4')).get('/home/core/note')).toMatchObject({ mode: 0o600, uid: 1000, gid: 1000, content: 'hi\n' });
      await fsck(img, 6, 'btrfs');
      await fsck(img, 9, 'ext4');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.runIf(isRoot)('loop devices [root]', () => {
  it('are gone when released, even while another process still has one open', async () => {
    const { attachLoop } = await import('../src/write/mount-backend.js');
    const file = join(work, 'loop-held.bin');
    await execa('truncate', ['-s', '4M', file]);
    const loop = await attachLoop(file, 0, 4 * 1024 * 1024, true);
    // Another process holds the device for a while, as a tool scanning block devices does.
    const holder = execa('sh', ['-c', `exec 3<"${loop.dev}"; sleep 1`]);
    await new Promise((r) => setTimeout(r, 200));
    await loop.release();
    expect(await leftovers(file)).toEqual([]);
    await holder;
  });
});
