/**
 * A metadata service of plain-text values, one per path (Vultr's and UpCloud's): the module for such
 * a platform is data, a table of paths and attribute names (oem/providers/vultr.ts, upcloud.ts).
 *
 * No token or header. A 404 or an empty value is absent; the network is DHCP's. Each value is one
 * line (surrounding whitespace trimmed) and is checked: the hostname by RFC 1123, the others as plain
 * words; anything else is dropped with a log line. A body over MAX_SMALL_BYTES is ignored with a log
 * line; the userdata is taken as it is.
 */
import { httpGet, joinUrl, showUrl } from './http.js';
import { MAX_SMALL_BYTES, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanSshKeys, shown } from './values.js';

export interface TextService {
  /** The oem id (vultr). */
  id: string;
  /** The platform's name for messages (Vultr). */
  title: string;
  /** Its attribute name part (VULTR: COREOS_VULTR_*). */
  name: string;
  /** The hostname's path; it gives COREOS_<name>_HOSTNAME and COREOS_HOSTNAME. */
  hostname: string;
  /** Other values: path, attribute suffix, what it is (for messages), the pattern it must match. */
  values: { path: string; key: string; what: string; pattern: RegExp }[];
  /** SSH keys, one a line. */
  keys: string;
  userdata: string;
}

/** A text value: null when absent (404); a body over MAX_SMALL_BYTES is ignored with a log line. */
async function text(s: TextService, env: ProviderEnv, path: string): Promise<string | null> {
  const url = joinUrl(env.metadataUrl, path);
  const b = await httpGet(url, env, { optional: true });
  if (b === null) return null;
  if (b.length > MAX_SMALL_BYTES) {
    env.log(`${s.id}: ${showUrl(url)}: ${b.length} bytes, more than the ${MAX_SMALL_BYTES} allowed; ignored`);
    return null;
  }
  return b.toString('utf8');
}

/** The provider for a plain-text metadata service described by `s`. */
export function textServiceProvider(s: TextService): MetadataProvider {
  return {
    id: s.id,
    async metadata(env: ProviderEnv): Promise<Metadata> {
      const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
      const a = md.attributes;
      const name = (await text(s, env, s.hostname))?.trim();
      const hostname = name ? cleanHostname(name, env.log, `${s.id}: the hostname`) : undefined;
      if (hostname !== undefined) {
        md.hostname = hostname;
        a.COREOS_HOSTNAME = a[`COREOS_${s.name}_HOSTNAME`] = hostname;
      }
      for (const v of s.values) {
        const value = (await text(s, env, v.path))?.trim();
        if (value === undefined || value === '') continue;
        if (v.pattern.test(value)) a[`COREOS_${s.name}_${v.key}`] = value;
        else env.log(`${s.id}: ignoring the ${v.what} ${shown(value)}: not a valid value`);
      }
      const keys = await text(s, env, s.keys);
      if (keys !== null) md.sshKeys = cleanSshKeys([keys], env.log, `the ${s.title} metadata`);
      return md;
    },
    async userdata(env: ProviderEnv): Promise<Userdata> {
      const url = joinUrl(env.metadataUrl, s.userdata);
      return userdataOrNull(await httpGet(url, env, { optional: true }), `${s.id}: the userdata from ${showUrl(url)}`);
    },
  };
}
