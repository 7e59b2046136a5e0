/** System extensions for tests: made by makeExtension (oem's squashfs writer, mkfs.erofs) from small trees. */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeExtension, type SysextFormat } from '../../src/sysext/make.js';

export const TEST_MTIME = 1_700_000_000;

/** A tree under `dir` with `release` as usr/lib/extension-release.d/extension-release.<name> (none when undefined) and a unit <name>-marker.service. */
export async function extensionTree(dir: string, name: string, release: string | undefined): Promise<string> {
  const t = await mkdtemp(join(dir, 'tree-'));
  await mkdir(join(t, 'usr/lib/systemd/system'), { recursive: true });
  await writeFile(join(t, 'usr/lib/systemd/system', `${name}-marker.service`), '[Unit]\nDescription=marker\n');
  if (release !== undefined) {
    await mkdir(join(t, 'usr/lib/extension-release.d'), { recursive: true });
    await writeFile(join(t, 'usr/lib/extension-release.d', `extension-release.${name}`), release);
  }
  return t;
}

/** `<name>.raw` in a new directory under `dir`, made from extensionTree. */
export async function testExtension(dir: string, name: string, release: string | undefined, format: SysextFormat = 'squashfs'): Promise<string> {
  const out = join(await mkdtemp(join(dir, 'ext-')), `${name}.raw`);
  await makeExtension(await extensionTree(dir, name, release), out, { format, mtime: TEST_MTIME, name });
  return out;
}
