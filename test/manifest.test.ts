import { Plugin } from '@oclif/core';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from './helpers/cli.js';

describe('oclif.manifest.json', () => {
  it('is the one the build generates (run `npm run manifest` after changing a command)', async () => {
    // The same plugin load `oclif manifest` does, from the freshly built dist/.
    const plugin = new Plugin({ root: REPO, type: 'core', ignoreManifest: true, errorOnManifestCreate: true, respectNoCacheDefault: true });
    await plugin.load();
    const committed = JSON.parse(await readFile(join(REPO, 'oclif.manifest.json'), 'utf8'));
    expect(committed).toEqual(JSON.parse(JSON.stringify(plugin.manifest)));
    expect(Object.keys(committed.commands)).toContain('inspect');
  });
});

describe('the Node.js requirement', () => {
  it('package.json, the launcher, install-deps.sh and the README name the same minimum, one that has every node: API the code uses', async () => {
    const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { engines: { node: string } };
    const m = /^>=(\d+)\.(\d+)$/.exec(pkg.engines.node);
    expect(m, pkg.engines.node).not.toBeNull();
    const [major, minor] = [Number(m![1]), Number(m![2])];
    // zlib.crc32 (src/image/gpt.ts) arrived in Node.js 20.15.
    expect(major > 20 || (major === 20 && minor >= 15)).toBe(true);
    const launcher = await readFile(join(REPO, 'bin', 'run.js'), 'utf8');
    expect(launcher).toContain(`major < ${major} || (major === ${major} && minor < ${minor})`);
    expect(await readFile(join(REPO, 'scripts', 'install-deps.sh'), 'utf8')).toContain(`b >= ${minor}`);
    expect(await readFile(join(REPO, 'README.md'), 'utf8')).toContain(`Node.js ${major}.${minor} or newer`);
  });
});
