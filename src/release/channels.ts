/** Distros, channels, boards and where their releases are served. */
import { OemError } from '../shared/errors.js';
import type { Distro } from './verify.js';

export interface DistroInfo {
  name: Distro;
  channels: string[];
  boards: string[];
  /** URL template of a channel's board directory. */
  baseUrl: string;
}

export const DISTROS: Record<Distro, DistroInfo> = {
  flatcar: {
    name: 'flatcar',
    channels: ['alpha', 'beta', 'stable', 'lts'],
    boards: ['amd64-usr', 'arm64-usr'],
    baseUrl: 'https://{channel}.release.flatcar-linux.net/{board}',
  },
  coreos: {
    name: 'coreos',
    channels: ['alpha', 'beta', 'stable'],
    boards: ['amd64-usr'],
    baseUrl: 'https://{channel}.release.core-os.net/{board}',
  },
};

export interface ReleaseRef {
  distro: Distro;
  channel: string;
  board: string;
  /** 'current' or X.Y.Z */
  release: string;
  baseUrl: string;
  imageName: string;
}

export function checkRef(distro: Distro, channel: string, board: string): void {
  const d = DISTROS[distro];
  if (!d.channels.includes(channel)) {
    throw new OemError(`${distro} has no ${channel} channel`, { code: 'usage', hint: `channels: ${d.channels.join(', ')}` });
  }
  if (!d.boards.includes(board)) {
    throw new OemError(`${distro} has no ${board} board`, { code: 'usage', hint: `boards: ${d.boards.join(', ')}` });
  }
}

/** The board directory URL: the template with {channel} and {board} filled in, no trailing slash. */
export function boardUrl(template: string, channel: string, board: string): string {
  const url = template.replaceAll('{channel}', channel).replaceAll('{board}', board).replace(/\/+$/, '');
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)');
  } catch {
    throw new OemError(`not an http(s) URL: ${url}`, { code: 'usage', hint: 'the base URL is a template like https://{channel}.release.flatcar-linux.net/{board}' });
  }
  return url;
}

export function defaultImageName(distro: Distro): string {
  return `${distro}_production_image.bin.bz2`;
}
