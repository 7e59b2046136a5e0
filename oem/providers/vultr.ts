/**
 * Vultr: the metadata service's plain-text values under env.metadataUrl (http://169.254.169.254),
 * the ones Afterburn reads:
 *
 *   /v1/hostname            the hostname            COREOS_VULTR_HOSTNAME, COREOS_HOSTNAME
 *   /v1/instanceid          e.g. a747bfz6385e       COREOS_VULTR_INSTANCE_ID
 *   /v1/region/regioncode   e.g. EWR                COREOS_VULTR_REGION_CODE
 *   /v1/public-keys         SSH keys, one a line
 *   /user-data/user-data    the userdata (as Ignition reads it), raw
 *
 * No token or header. A 404 or an empty value is absent; the network is DHCP's. Each value is one
 * line (surrounding whitespace trimmed) and is checked: a hostname by RFC 1123, the instance id and
 * region code as plain words; anything else is dropped with a log line.
 */
import { httpGet, joinUrl, showUrl } from './http.js';
import { MAX_SMALL_BYTES, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanSshKeys, shown } from './values.js';

type Log = (line: string) => void;

/** A text value: null when absent (404); a body over MAX_SMALL_BYTES is ignored with a log line. */
async function text(env: ProviderEnv, path: string): Promise<string | null> {
  const url = joinUrl(env.metadataUrl, path);
  const b = await httpGet(url, env, { optional: true });
  if (b === null) return null;
  if (b.length > MAX_SMALL_BYTES) {
    env.log(`vultr: ${showUrl(url)}: ${b.length} bytes, more than the ${MAX_SMALL_BYTES} allowed; ignored`);
    return null;
  }
  return b.toString('utf8');
}

/** A one-line value matching `re` (trimmed); undefined when empty, with a log line when it does not match. */
function word(value: string | null, re: RegExp, what: string, log: Log): string | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (v === '') return undefined;
  if (re.test(v)) return v;
  log(`vultr: ignoring the ${what} ${shown(v)}: not a valid value`);
  return undefined;
}

const ID = /^[A-Za-z0-9-]{1,64}$/;
const REGION = /^[A-Za-z0-9-]{1,32}$/;

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const a = md.attributes;
  const name = (await text(env, '/v1/hostname'))?.trim();
  const hostname = name ? cleanHostname(name, env.log, 'vultr: the hostname') : undefined;
  if (hostname !== undefined) {
    md.hostname = hostname;
    a.COREOS_HOSTNAME = a.COREOS_VULTR_HOSTNAME = hostname;
  }
  const id = word(await text(env, '/v1/instanceid'), ID, 'instance id', env.log);
  if (id !== undefined) a.COREOS_VULTR_INSTANCE_ID = id;
  const region = word(await text(env, '/v1/region/regioncode'), REGION, 'region code', env.log);
  if (region !== undefined) a.COREOS_VULTR_REGION_CODE = region;
  const keys = await text(env, '/v1/public-keys');
  if (keys !== null) md.sshKeys = cleanSshKeys([keys], env.log, 'the Vultr metadata');
  return md;
}

/** /user-data/user-data as it is; null when there is none (404 or empty). */
async function userdata(env: ProviderEnv): Promise<Userdata> {
  const url = joinUrl(env.metadataUrl, '/user-data/user-data');
  return userdataOrNull(await httpGet(url, env, { optional: true }), `vultr: the userdata from ${showUrl(url)}`);
}

export const provider: MetadataProvider = { id: 'vultr', metadata, userdata };
