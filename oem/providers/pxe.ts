/**
 * PXE and iPXE boots: no metadata; userdata from, in this order,
 *
 *   1. a URL on the kernel command line (env.cmdline, else <root>/proc/cmdline):
 *      `flatcar.config.url=`, then `coreos.config.url=`, then `cloud-config-url=` (the last
 *      occurrence of a name counts; http and https only, other schemes are logged and skipped). A
 *      URL that answers 404 is an error: it was asked for explicitly.
 *   2. <root>/var/lib/coreos-install/user_data (e.g. put there by a cpio added to the initramfs),
 *   3. <root>/usr/share/oem/userdata.
 */
import { httpGet, showUrl } from './http.js';
import { MAX_SMALL_BYTES, MAX_USERDATA_BYTES, readRootFile, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { shown } from './values.js';

export const URL_PARAMS = ['flatcar.config.url', 'coreos.config.url', 'cloud-config-url'];
export const USERDATA_FILES = ['/var/lib/coreos-install/user_data', '/usr/share/oem/userdata'];

/** Kernel command line parameters (name -> value of its last occurrence; flags map to ''). */
export function parseCmdline(cmdline: string): Map<string, string> {
  const out = new Map<string, string>();
  const words: string[] = [];
  let cur = '';
  let quoted = false;
  let inWord = false;
  for (const ch of cmdline) {
    if (ch === '"') {
      quoted = !quoted;
      inWord = true;
    } else if (!quoted && /\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  for (const w of words) {
    const eq = w.indexOf('=');
    if (eq === -1) out.set(w, '');
    else out.set(w.slice(0, eq), w.slice(eq + 1));
  }
  return out;
}

async function cmdline(env: ProviderEnv): Promise<string> {
  if (env.cmdline !== undefined) return env.cmdline;
  const buf = await readRootFile(env, '/proc/cmdline', MAX_SMALL_BYTES);
  return buf === null ? '' : buf.toString('utf8');
}

/** The config URLs on the command line, in the order they are tried. */
export function configUrls(params: Map<string, string>, env: ProviderEnv): string[] {
  const urls: string[] = [];
  for (const name of URL_PARAMS) {
    const value = params.get(name);
    if (value === undefined || value === '') continue;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      env.log(`pxe: ignored ${name}=${shown(value)}: not a URL`);
      continue;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      env.log(`pxe: ignored ${name}=${shown(value)}: only http and https URLs are fetched`);
      continue;
    }
    urls.push(url.href);
  }
  return urls;
}

export const provider: MetadataProvider = {
  id: 'pxe',
  also: ['ipxe'],

  async metadata(): Promise<Metadata> {
    return { attributes: {}, sshKeys: [], networkUnits: [] };
  },

  async userdata(env: ProviderEnv): Promise<Userdata> {
    const urls = configUrls(parseCmdline(await cmdline(env)), env);
    const url = urls[0];
    if (url !== undefined) {
      // Not optional: a URL given explicitly that answers 404 is an error (HttpError).
      const data = await httpGet(url, env);
      if (data === null || data.length === 0) env.log(`pxe: ${showUrl(url)} is empty`);
      return userdataOrNull(data, showUrl(url));
    }
    for (const path of USERDATA_FILES) {
      const data = userdataOrNull(await readRootFile(env, path, MAX_USERDATA_BYTES));
      if (data !== null) return data;
    }
    return null;
  },
};
