/**
 * Makes a fake release mirror from a raw disk image:
 *
 *   npx tsx scripts/make-mirror.ts --image IMAGE.bin --version X.Y.Z --out DIR
 *       [--distro flatcar|coreos] [--channel stable] [--board amd64-usr] [--key-out DIR] [--serve]
 *
 * Compresses the image (an image already ending in .bz2 is used as is), generates a throw-away
 * signing key (test-key.asc, test-key.pub.asc), publishes the release under {version}/ and
 * current/ (with the oem-<platform>.raw files beside IMAGE, Flatcar's OEM extensions, signed the same
 * way), and with --serve serves DIR on 127.0.0.1 until Ctrl-C.
 */
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { compressBzip2, generateTestKey, publishRelease, type Distro } from './lib/mirror.js';
import { startMirrorServer } from './lib/mirror-server.js';

const USAGE = `usage: npx tsx scripts/make-mirror.ts --image IMAGE.bin --version X.Y.Z --out DIR
    [--distro flatcar|coreos] [--channel stable] [--board amd64-usr] [--key-out DIR] [--serve]`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      image: { type: 'string' },
      distro: { type: 'string', default: 'flatcar' },
      channel: { type: 'string', default: 'stable' },
      board: { type: 'string', default: 'amd64-usr' },
      version: { type: 'string' },
      out: { type: 'string' },
      'key-out': { type: 'string' },
      serve: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const { image, version, out } = values;
  if (!image || !version || !out) throw new Error(`--image, --version and --out are required\n${USAGE}`);
  if (values.distro !== 'flatcar' && values.distro !== 'coreos') throw new Error(`--distro must be flatcar or coreos\n${USAGE}`);
  if (!/^\d+\.\d+\.\d+$/.test(version)) throw new Error(`--version must be X.Y.Z, got ${version}`);
  const distro: Distro = values.distro;
  const outDir = resolve(out);
  const keyDir = resolve(values['key-out'] ?? join(outDir, 'keys'));
  await mkdir(outDir, { recursive: true });
  await mkdir(keyDir, { recursive: true });

  let bz2 = resolve(image);
  let tmpBz2: string | undefined;
  if (!image.endsWith('.bz2')) {
    tmpBz2 = join(outDir, `.make-mirror-${process.pid}.bin.bz2`);
    const t0 = Date.now();
    const tool = await compressBzip2(bz2, tmpBz2);
    console.log(`compressed ${image} with ${tool} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    bz2 = tmpBz2;
  }

  try {
    const key = await generateTestKey();
    const secretPath = join(keyDir, 'test-key.asc');
    const publicPath = join(keyDir, 'test-key.pub.asc');
    await writeFile(secretPath, key.armoredPrivate, { mode: 0o600 });
    await writeFile(publicPath, key.armoredPublic);
    console.log(`key ${key.fingerprint} (signing subkey ${key.signingSubkeyFingerprint})`);
    console.log(`  ${secretPath}`);
    console.log(`  ${publicPath}`);

    const pub = await publishRelease({
      mirrorDir: outDir,
      distro,
      channel: values.channel,
      board: values.board,
      version,
      imageBz2: bz2,
      armoredPrivateKey: key.armoredPrivate,
      current: true,
      oemSysexts: await oemExtensionsBeside(resolve(image)),
    });
    console.log(`published ${distro} ${version} to ${pub.dir}`);
    for (const f of Object.values(pub.files).flat()) console.log(`  ${f}`);
    if (pub.currentDir) console.log(`and to ${pub.currentDir}`);
  } finally {
    if (tmpBz2) await rm(tmpBz2, { force: true });
  }

  if (values.serve) {
    const server = await startMirrorServer(outDir);
    console.log(`serving ${outDir} at ${server.url}/ (Ctrl-C to stop)`);
    console.log(`  e.g. ${server.url}/${values.channel}/${values.board}/current/version.txt`);
    await new Promise<void>((ok) => {
      const stop = (): void => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        ok();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    await server.close();
    console.log(`served ${server.requests.length} requests`);
  }
}

/** The OEM extensions beside the image (`oem-<platform>.raw`), by platform id. */
async function oemExtensionsBeside(image: string): Promise<Record<string, string>> {
  const names = (await readdir(dirname(image))).filter((f) => /^oem-[a-z0-9][a-z0-9_-]*\.raw$/.test(f)).sort();
  return Object.fromEntries(names.map((f) => [f.slice('oem-'.length, -'.raw'.length), join(dirname(image), f)]));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
