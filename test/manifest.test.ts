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
