/**
 * Whether systemd-sysext would merge an extension on an image: the rules of systemd's
 * extension_release_validate (man systemd-sysext), applied to the extension's
 * `usr/lib/extension-release.d/extension-release.<name>` and the image's os-release.
 *
 * 1. `SYSEXT_SCOPE`, when set, must name `system` (extensions are merged on the booted system).
 * 2. `ARCHITECTURE`, when set and not `_any`, must be the image's (`x86-64`, `arm64`).
 * 3. `ID` must be set: `_any` matches every OS (and skips the version rules); otherwise it must be
 *    the image's `ID` or one of its `ID_LIKE` (Flatcar: `ID=flatcar`, `ID_LIKE=coreos`).
 * 4. An image without `VERSION_ID` and `SYSEXT_LEVEL` takes any version.
 * 5. When both set `SYSEXT_LEVEL`, they must be equal; otherwise the extension's `VERSION_ID` must
 *    be the image's.
 */
import { parseKeyValues } from '../image/generation.js';

export type Keys = Record<string, string>;

export interface MergeVerdict {
  merges: boolean;
  /** Why, in one line (as systemd-sysext says it, more or less). */
  reason: string;
}

/** systemd's name for the architecture of a Container Linux board. */
export function boardArchitecture(board: string | undefined): string | undefined {
  if (board === undefined) return undefined;
  if (board.startsWith('amd64')) return 'x86-64';
  if (board.startsWith('arm64')) return 'arm64';
  return undefined;
}

export function parseRelease(text: string): Keys {
  return parseKeyValues(text);
}

/** The verdict for extension `name` with these extension-release keys on an image with `os` (os-release) and `arch`. */
export function mergeVerdict(name: string, ext: Keys | undefined, os: Keys, arch: string | undefined): MergeVerdict {
  const no = (reason: string): MergeVerdict => ({ merges: false, reason });
  if (ext === undefined) return no(`${name} has no usr/lib/extension-release.d/extension-release.${name}`);
  const scope = ext.SYSEXT_SCOPE;
  if (scope && !scope.split(/\s+/).includes('system')) return no(`${name} is for the scope "${scope}", not "system"`);
  const extArch = ext.ARCHITECTURE;
  if (extArch && extArch !== '_any' && extArch !== arch) return no(`${name} is for the architecture ${extArch}, the image is ${arch ?? 'of an unknown architecture'}`);
  const id = ext.ID;
  if (!id) return no(`${name} sets no ID`);
  if (id === '_any') return { merges: true, reason: `${name} has ID=_any` };
  const like = (os.ID_LIKE ?? '').split(/\s+/).filter(Boolean);
  if (id !== os.ID && !like.includes(id)) return no(`${name} is for the OS ${id}, the image is ${os.ID ?? 'unknown'}${like.length ? ` (like ${like.join(' ')})` : ''}`);
  if (!os.VERSION_ID && !os.SYSEXT_LEVEL) return { merges: true, reason: `${name} has ID=${id}; the image sets no version` };
  if (os.SYSEXT_LEVEL && ext.SYSEXT_LEVEL) {
    if (os.SYSEXT_LEVEL !== ext.SYSEXT_LEVEL) return no(`${name} is for SYSEXT_LEVEL ${ext.SYSEXT_LEVEL}, the image has ${os.SYSEXT_LEVEL}`);
    return { merges: true, reason: `${name} has ID=${id} and SYSEXT_LEVEL=${ext.SYSEXT_LEVEL}` };
  }
  if (os.VERSION_ID) {
    if (!ext.VERSION_ID) return no(`${name} sets neither SYSEXT_LEVEL nor VERSION_ID, the image is ${os.VERSION_ID}`);
    if (ext.VERSION_ID !== os.VERSION_ID) return no(`${name} is for version ${ext.VERSION_ID}, the image is ${os.VERSION_ID}`);
  }
  return { merges: true, reason: `${name} has ID=${id} and VERSION_ID=${ext.VERSION_ID ?? ''}` };
}
