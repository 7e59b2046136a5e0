/**
 * `npm run bench`: oem against the hand-made pipeline, on one machine, in one run (needs root: the
 * recipes use losetup and mount, as the distributor notes do).
 *
 *   npm run bench [-- --dir DIR] [--usr-data-mb N] [--fresh] [--skip-recipes] [--formats F,F] [--skip-cold-formats]
 *
 * Makes (once, kept in DIR between runs) the full-size test release: a 4,756,340,736-byte
 * Flatcar-style image with about 900 MB of real data, lbzip2-compressed, signed with a throw-away key
 * and served on 127.0.0.1. Then times, as whole processes (wall, user+system CPU of the process and
 * its children, peak RSS of the largest of them), through /usr/bin/time:
 *   1. the manual recipe: gpg --verify, bunzip2, losetup + mount, copy OEM files and the key, umount,
 *      bzip2 -9;
 *   2. the same with lbzip2 both ways;
 *   3. oem build --provider ec2 --format raw, cache cold (release downloaded, not yet decoded), warm;
 *   4. oem build for 4 providers and for all providers, cold, one run each;
 *   5. one row per format: ec2 built with that format alone (default compression), cold, then warm; raw
 *      with --compress zst; and every default format of every provider, cold;
 *   6. the extension era: a full-size Flatcar 4593 release (1 GiB OEM, Flatcar's OEM extensions for
 *      the platforms it lists) on the beta channel, pxe (a provider with its own extension, holding
 *      the real agent) and all providers, raw, cold.
 * Runs 1-4 write the same as the recipes: the raw image as .bin.bz2, OEM content and an SSH key.
 * Prints a table with ratios and the targets (the oem runs against the lbzip2 recipe), and writes bench/results/<time>.json and
 * bench/results/latest.json.
 */
import { execa } from 'execa';
import { cp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { compressBzip2, generateTestKey, publishRelease } from './lib/mirror.js';
import { startMirrorServer } from './lib/mirror-server.js';
import { buildTestImage, FULL_SIZE, writeOemExtensions } from './lib/test-image.js';
import { FORMATS } from '../src/artifacts/formats.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
// Timed runs start the CLI as users do, by its #! line (bin/run.js: the shell sets glibc's malloc up).
const BIN = join(REPO, 'bin', 'run.js');
const VERSION = '3510.2.8';
const SYSEXT_VERSION = '4593.1.0';

interface Timing {
  name: string;
  wallS: number;
  cpuS: number;
  peakRssMiB: number;
}

async function timed(name: string, cmd: string[], env: Record<string, string> = {}): Promise<Timing> {
  const out = join(tmpdir(), `oem-bench-time-${process.pid}`);
  process.stdout.write(`  ${name} ... `);
  const r = await execa('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, '--', ...cmd], { reject: false, env: { ...process.env, ...env }, stdin: 'ignore' });
  if (r.exitCode !== 0) throw new Error(`${name} failed (exit ${r.exitCode}):\n${String(r.stderr).slice(-3000)}`);
  const [e, u, s, m] = (await readFile(out, 'utf8')).trim().split('\n').pop()!.split(' ').map(Number);
  await rm(out, { force: true });
  const t = { name, wallS: e!, cpuS: Math.round((u! + s!) * 100) / 100, peakRssMiB: Math.round((m! / 1024) * 10) / 10 };
  console.log(`${t.wallS.toFixed(1)} s wall, ${t.cpuS.toFixed(1)} s CPU, ${t.peakRssMiB} MiB peak RSS`);
  return t;
}

/** The distributor notes' recipe, as a shell script; DEC and COMP choose the bzip2 tools. */
const RECIPE = `set -euo pipefail
gpg --batch --quiet --verify "$SIG" "$IMG_BZ2"
$DEC -c "$IMG_BZ2" > "$WORK/image.bin"
mkdir -p "$WORK/mnt"
loop=$(losetup -f --show -o "$P6_OFF" --sizelimit "$P6_SIZE" "$WORK/image.bin")
mount "$loop" "$WORK/mnt"
cp -a "$OEM_DIR/." "$WORK/mnt/"
umount "$WORK/mnt"
losetup -d "$loop"
loop=$(losetup -f --show -o "$P9_OFF" --sizelimit "$P9_SIZE" "$WORK/image.bin")
mount "$loop" "$WORK/mnt"
install -d -m 700 -o 500 -g 500 "$WORK/mnt/home/core/.ssh"
install -m 600 -o 500 -g 500 "$SSH_KEY" "$WORK/mnt/home/core/.ssh/authorized_keys"
umount "$WORK/mnt"
losetup -d "$loop"
$COMP -c "$WORK/image.bin" > "$WORK/out.bin.bz2"
rm -f "$WORK/image.bin"
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string' },
      'usr-data-mb': { type: 'string', default: '900' },
      fresh: { type: 'boolean', default: false },
      'skip-recipes': { type: 'boolean', default: false },
      // Comma-separated formats for the per-format rows (default: all), and whether to time them cold too.
      formats: { type: 'string' },
      'skip-cold-formats': { type: 'boolean', default: false },
    },
  });
  if (process.getuid?.() !== 0 && !values['skip-recipes']) {
    throw new Error('the bench needs root: the hand-made recipes it compares with use losetup and mount (or pass --skip-recipes)');
  }
  const dir = resolve(values.dir ?? process.env.OEM_BENCH_DIR ?? join(tmpdir(), 'oem-bench'));
  if (values.fresh) await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const mirror = join(dir, 'mirror');
  const keyPub = join(dir, 'test-key.pub.asc');
  const bz2 = join(mirror, 'stable', 'amd64-usr', VERSION, 'flatcar_production_image.bin.bz2');

  // The release, made once.
  if (!(await stat(bz2).catch(() => null)) || !(await stat(keyPub).catch(() => null))) {
    console.log(`making the full-size test release in ${dir} (once) ...`);
    const raw = join(dir, 'flatcar_production_image.bin');
    await rm(raw, { force: true });
    await buildTestImage({ path: raw, generation: 'flatcar', size: 'full', version: VERSION, usrDataBytes: Number(values['usr-data-mb']) * 1024 * 1024 });
    const packed = join(dir, 'release.bin.bz2');
    await compressBzip2(raw, packed);
    await rm(raw, { force: true });
    const key = await generateTestKey();
    await publishRelease({ mirrorDir: mirror, distro: 'flatcar', channel: 'stable', board: 'amd64-usr', version: VERSION, imageBz2: packed, armoredPrivateKey: key.armoredPrivate, current: true });
    await rm(packed, { force: true });
    await writeFile(keyPub, key.armoredPublic);
  }
  // The extension era's release, made once: the same size, OEM extensions beside the image.
  const sysextBz2 = join(mirror, 'beta', 'amd64-usr', SYSEXT_VERSION, 'flatcar_production_image.bin.bz2');
  const betaKeyPub = join(dir, 'test-key-beta.pub.asc');
  if (!(await stat(sysextBz2).catch(() => null)) || !(await stat(betaKeyPub).catch(() => null))) {
    console.log(`making the full-size Flatcar ${SYSEXT_VERSION} test release in ${dir} (once) ...`);
    const made = join(dir, 'sysext-release');
    await rm(made, { recursive: true, force: true });
    await mkdir(made);
    const raw = join(made, 'flatcar_production_image.bin');
    await buildTestImage({ path: raw, generation: 'flatcar-sysext', size: 'full', version: SYSEXT_VERSION, usrDataBytes: Number(values['usr-data-mb']) * 1024 * 1024 });
    const exts = await writeOemExtensions(made, SYSEXT_VERSION);
    const packed = join(made, 'release.bin.bz2');
    await compressBzip2(raw, packed);
    await rm(raw, { force: true });
    const key = await generateTestKey();
    const oemSysexts = Object.fromEntries(exts.map((f) => [f.replace(/^.*\/oem-(.*)\.raw$/, '$1'), f]));
    await publishRelease({ mirrorDir: mirror, distro: 'flatcar', channel: 'beta', board: 'amd64-usr', version: SYSEXT_VERSION, imageBz2: packed, armoredPrivateKey: key.armoredPrivate, current: true, oemSysexts });
    await rm(made, { recursive: true, force: true });
    await writeFile(betaKeyPub, key.armoredPublic);
  }
  const release = { bytes: (await stat(bz2)).size, imageBytes: FULL_SIZE };
  console.log(`release: ${bz2} (${(release.bytes / 1e6).toFixed(0)} MB compressed, ${release.imageBytes} bytes raw)`);

  const server = await startMirrorServer(mirror);
  const work = join(dir, 'work');
  await rm(work, { recursive: true, force: true });
  await mkdir(work);
  const sshKey = join(work, 'id.pub');
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench@example', '-f', join(work, 'id')]);
  const results: Timing[] = [];
  try {
    const cache = join(work, 'cache');
    const common = ['--base-url', `${server.url}/{channel}/{board}`, '--key', keyPub, '--cache-dir', cache];

    // The partition offsets and the OEM content the recipes copy (the templates ec2 is made from and the agent).
    const ins = JSON.parse((await execa(process.execPath, [BIN, 'inspect', bz2, '--json'])).stdout) as { sectorSize: number; partitions: { number: number; firstLba: number; size: number }[] };
    const p = (n: number) => {
      const x = ins.partitions.find((y) => y.number === n)!;
      return { offset: x.firstLba * ins.sectorSize, size: x.size };
    };
    const oemDir = join(work, 'oem-files');
    await cp(join(REPO, 'templates', '_common'), oemDir, { recursive: true });
    await cp(join(REPO, 'templates', 'ec2'), oemDir, { recursive: true });
    await cp(join(REPO, 'dist', 'agent', 'oem-agent-linux-x64.xz'), join(oemDir, 'oem-agent.xz'));

    if (!values['skip-recipes']) {
      const gnupg = join(work, 'gnupg');
      await mkdir(gnupg, { mode: 0o700 });
      await execa('gpg', ['--batch', '--quiet', '--import', keyPub], { env: { GNUPGHOME: gnupg } });
      const script = join(work, 'recipe.sh');
      await writeFile(script, RECIPE);
      const env = {
        GNUPGHOME: gnupg, SIG: `${bz2}.sig`, IMG_BZ2: bz2, OEM_DIR: oemDir, SSH_KEY: sshKey, WORK: join(work, 'recipe'),
        P6_OFF: String(p(6).offset), P6_SIZE: String(p(6).size), P9_OFF: String(p(9).offset), P9_SIZE: String(p(9).size),
      };
      await mkdir(env.WORK);
      console.log('hand-made recipes:');
      results.push(await timed('recipe 1: bunzip2 + bzip2 -9', ['bash', script], { ...env, DEC: 'bunzip2', COMP: 'bzip2 -9' }));
      results.push(await timed('recipe 2: lbzip2 -d + lbzip2 -9', ['bash', script], { ...env, DEC: 'lbzip2 -d', COMP: 'lbzip2 -9' }));
    }

    console.log('oem:');
    await execa(process.execPath, [BIN, 'fetch', '--channel', 'stable', ...common], { stdin: 'ignore' });
    const build = (name: string, args: string[]) => timed(name, [BIN, 'build', ...args, '--format', 'raw', '--ssh-key', sshKey, ...common, '--output-dir', join(work, 'out')]);
    const cold = async () => rm(join(cache, 'bases'), { recursive: true, force: true });
    await cold();
    results.push(await build('oem ec2, cold cache', ['--provider', 'ec2']));
    results.push(await build('oem ec2, warm cache', ['--provider', 'ec2']));
    await cold();
    results.push(await build('oem 4 providers, cold', ['--provider', 'ec2', '--provider', 'gce', '--provider', 'azure', '--provider', 'openstack']));
    await cold();
    results.push(await build('oem all providers, cold', ['--all-providers']));
    const providers = (JSON.parse((await execa(process.execPath, [BIN, 'providers', '--json'])).stdout) as unknown[]).length;

    // The extension era: pxe (its own extension, with the real agent) alone and all providers, raw, cold.
    const beta = ['--channel', 'beta', '--base-url', `${server.url}/{channel}/{board}`, '--key', betaKeyPub, '--cache-dir', cache];
    await execa(process.execPath, [BIN, 'fetch', ...beta], { stdin: 'ignore' });
    const sysextBuild = (name: string, args: string[]) => timed(name, [BIN, 'build', ...args, '--format', 'raw', '--ssh-key', sshKey, ...beta, '--output-dir', join(work, 'sysext')]);
    await cold();
    results.push(await sysextBuild(`oem pxe, Flatcar ${SYSEXT_VERSION}, cold`, ['--provider', 'pxe']));
    await cold();
    results.push(await sysextBuild(`oem all providers, Flatcar ${SYSEXT_VERSION}, cold`, ['--all-providers']));
    await rm(join(work, 'sysext'), { recursive: true, force: true });

    // One row per format (issue 19): ec2 with that format alone and its default compression, cold (the
    // release downloaded, nothing decoded or compressed yet), then warm (built again from that cache:
    // the base decoded, the compressed pieces kept); then raw with --compress zst, and every default
    // format of every provider, cold. With --skip-cold-formats the first build is from the base the
    // runs above decoded, with no pieces of that format yet.
    const formats = values.formats ? String(values.formats).split(',') : [...FORMATS];
    const buildAs = async (name: string, args: string[]) => {
      await rm(join(work, 'fmt'), { recursive: true, force: true });
      return timed(name, [BIN, 'build', '--provider', 'ec2', ...args, '--ssh-key', sshKey, ...common, '--output-dir', join(work, 'fmt')]);
    };
    for (const f of formats) {
      if (values['skip-cold-formats']) await buildAs(`format ${f}, first`, ['--format', f]);
      else {
        await cold();
        results.push(await buildAs(`format ${f}, cold`, ['--format', f]));
      }
      results.push(await buildAs(`format ${f}, warm`, ['--format', f]));
    }
    await buildAs('format raw --compress zst, first', ['--format', 'raw', '--compress', 'zst']);
    results.push(await buildAs('format raw --compress zst, warm', ['--format', 'raw', '--compress', 'zst']));
    await rm(join(work, 'fmt'), { recursive: true, force: true });
    await cold();
    results.push(await timed('oem all providers, every default format, cold', [BIN, 'build', '--all-providers', '--ssh-key', sshKey, ...common, '--output-dir', join(work, 'all-formats')]));
    await rm(join(work, 'all-formats'), { recursive: true, force: true });


    // Checks, untimed: the ec2 output is a valid bzip2 file; a raw (uncompressed) output is sparse.
    await execa('lbzip2', ['-t', join(work, 'out', 'ec2', 'flatcar_production_ec2_image.bin.bz2')]);
    await execa(process.execPath, [BIN, 'build', '--provider', 'qemu', '--format', 'raw', '--compress', 'none', ...common, '--output-dir', join(work, 'raw')], { stdin: 'ignore' });
    const rawOut = await stat(join(work, 'raw', 'qemu', 'flatcar_production_qemu_image.bin'));
    const sparse = { apparentBytes: rawOut.size, allocatedBytes: rawOut.blocks * 512 };

    const t = Object.fromEntries(results.map((r) => [r.name, r]));
    const r1 = t['recipe 1: bunzip2 + bzip2 -9'];
    const r2 = t['recipe 2: lbzip2 -d + lbzip2 -9'];
    const one = t['oem ec2, cold cache']!;
    const warm = t['oem ec2, warm cache']!;
    const all = t['oem all providers, cold']!;
    const ratio = (a: Timing, b: Timing | undefined) => (b ? Math.round((a.wallS / b.wallS) * 1000) / 1000 : null);
    const peak = Math.max(...results.filter((r) => r.name.startsWith('oem')).map((r) => r.peakRssMiB));
    const targets = [
      { target: 'one provider, cold <= 0.5x recipe 1', value: ratio(one, r1), limit: 0.5 },
      { target: 'one provider, cold <= 1.0x recipe 2', value: ratio(one, r2), limit: 1.0 },
      { target: 'one provider, warm <= 0.2x recipe 2', value: ratio(warm, r2), limit: 0.2 },
      { target: 'all providers <= 2x one provider (both cold)', value: ratio(all, one), limit: 2.0 },
      ...formats.map((f) => ({ target: `format ${f}, warm <= 0.3x recipe 2`, value: ratio(t[`format ${f}, warm`]!, r2), limit: 0.3 })),
      { target: 'every default format of every provider, cold <= 2x one provider raw (cold)', value: ratio(t['oem all providers, every default format, cold']!, one), limit: 2.0 },
      { target: 'peak RSS of oem < 256 MiB', value: peak, limit: 256 },
      { target: 'raw outputs sparse (allocated/apparent)', value: Math.round((sparse.allocatedBytes / sparse.apparentBytes) * 1000) / 1000, limit: 1 },
    ].map((x) => ({ ...x, met: x.value === null ? null : x.value < x.limit || (x.limit !== 256 && x.limit !== 1 && x.value === x.limit) }));

    console.log('\n| run | wall s | CPU s | peak RSS MiB | vs recipe 1 | vs recipe 2 |\n|---|---:|---:|---:|---:|---:|');
    for (const r of results) console.log(`| ${r.name} | ${r.wallS.toFixed(1)} | ${r.cpuS.toFixed(1)} | ${r.peakRssMiB} | ${ratio(r, r1)?.toFixed(3) ?? '-'} | ${ratio(r, r2)?.toFixed(3) ?? '-'} |`);
    console.log('\n| target | measured | met |\n|---|---:|---|');
    for (const x of targets) console.log(`| ${x.target} | ${x.value ?? '-'} | ${x.met === null ? 'not measured' : x.met ? 'yes' : 'NO'} |`);

    const when = new Date().toISOString();
    const doc = {
      when,
      machine: { cpus: cpus().length, model: cpus()[0]?.model ?? '', node: process.version },
      release,
      providers,
      tools: { lbzip2: (await execa('lbzip2', ['--version'], { reject: false })).stdout.split('\n')[0] ?? '', bzip2: (await execa('sh', ['-c', 'bzip2 --help 2>&1 | head -1'])).stdout },
      results,
      sparse,
      targets,
    };
    const resultsDir = join(REPO, 'bench', 'results');
    await mkdir(resultsDir, { recursive: true });
    const text = JSON.stringify(doc, null, 2) + '\n';
    await writeFile(join(resultsDir, `${when.replace(/[:.]/g, '-')}.json`), text);
    await writeFile(join(resultsDir, 'latest.json'), text);
    console.log(`\nwrote bench/results/latest.json`);
  } finally {
    await server.close();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
