/** Flags shared by the commands that get releases (fetch, build). */
import { Flags } from '@oclif/core';
import { readFile } from 'node:fs/promises';
import { OemError } from './shared/errors.js';
import type { Distro } from './release/verify.js';

export const releaseFlags = {
  distro: Flags.string({ description: 'distribution', options: ['flatcar', 'coreos'], default: 'flatcar' }),
  channel: Flags.string({ description: 'release channel', options: ['alpha', 'beta', 'stable', 'lts'], default: 'stable' }),
  board: Flags.string({ description: 'board', options: ['amd64-usr', 'arm64-usr'], default: 'amd64-usr' }),
  release: Flags.string({ description: '"current" or a version X.Y.Z', default: 'current' }),
  'base-url': Flags.string({
    description: 'URL template of the board directory, with {channel} and {board} (default: the distro\'s official server)',
    env: 'OEM_BASE_URL',
  }),
  'image-name': Flags.string({ description: 'image file name (default {distro}_production_image.bin.bz2)' }),
  key: Flags.string({ description: 'trust this public key file instead of the bundled official keys (repeatable)', multiple: true }),
  'cache-dir': Flags.string({ description: 'cache directory (default $XDG_CACHE_HOME/oem)', env: 'OEM_CACHE_DIR' }),
  insecure: Flags.boolean({ description: 'do NOT check the signature (prints a warning; never for published images)', default: false }),
};

/** Where a release comes from, as the release flags say (keys and --insecure are separate). */
export function releaseSource(flags: {
  distro: string;
  channel: string;
  board: string;
  release: string;
  'base-url'?: string | undefined;
  'image-name'?: string | undefined;
  'cache-dir'?: string | undefined;
}): { distro: Distro; channel: string; board: string; release: string; baseUrl?: string; imageName?: string; cacheDir?: string } {
  return {
    distro: flags.distro as Distro,
    channel: flags.channel,
    board: flags.board,
    release: flags.release,
    ...(flags['base-url'] ? { baseUrl: flags['base-url'] } : {}),
    ...(flags['image-name'] ? { imageName: flags['image-name'] } : {}),
    ...(flags['cache-dir'] ? { cacheDir: flags['cache-dir'] } : {}),
  };
}

/** The signing key's passphrase: from --sign-passphrase-file, else OEM_SIGN_PASSPHRASE. */
export async function signPassphrase(file: string | undefined): Promise<{ signPassphrase?: string }> {
  if (file) {
    const text = await readFile(file, 'utf8').catch(() => {
      throw new OemError(`cannot read --sign-passphrase-file ${file}`, { code: 'usage' });
    });
    return { signPassphrase: text.replace(/\r?\n$/, '') };
  }
  const env = process.env.OEM_SIGN_PASSPHRASE;
  return env !== undefined ? { signPassphrase: env } : {};
}
