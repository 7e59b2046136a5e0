/**
 * UpCloud: the metadata service's plain-text values under env.metadataUrl (http://169.254.169.254),
 * the ones Afterburn reads:
 *
 *   /metadata/v1/hostname      the hostname                            COREOS_UPCLOUD_HOSTNAME, COREOS_HOSTNAME
 *   /metadata/v1/instance_id   the server's UUID                       COREOS_UPCLOUD_INSTANCE_ID
 *   /metadata/v1/region        the zone, e.g. de-fra1                  COREOS_UPCLOUD_REGION
 *   /metadata/v1/public_keys   SSH keys, one a line
 *   /metadata/v1/user_data     the userdata (as Ignition reads it), raw
 *
 * No token or header. A 404 or an empty value is absent; the network is DHCP's. Each value is one
 * line (surrounding whitespace trimmed) and is checked: a hostname by RFC 1123, the instance id and
 * region as plain words; anything else is dropped with a log line.
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
    env.log(`upcloud: ${showUrl(url)}: ${b.length} bytes, more than the ${MAX_SMALL_BYTES} allowed; ignored`);
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
  log(`upcloud: ignoring the ${what} ${shown(v)}: not a valid value`);
  return undefined;
}

const ID = /^[A-Za-z0-9-]{1,64}$/;
const REGION = /^[A-Za-z0-9-]{1,32}$/;

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const a = md.attributes;
  const name = (await text(env, '/metadata/v1/hostname'))?.trim();
  const hostname = name ? cleanHostname(name, env.log, 'upcloud: the hostname') : undefined;
  if (hostname !== undefined) {
    md.hostname = hostname;
    a.COREOS_HOSTNAME = a.COREOS_UPCLOUD_HOSTNAME = hostname;
  }
  const id = word(await text(env, '/metadata/v1/instance_id'), ID, 'instance id', env.log);
  if (id !== undefined) a.COREOS_UPCLOUD_INSTANCE_ID = id;
  const region = word(await text(env, '/metadata/v1/region'), REGION, 'region', env.log);
  if (region !== undefined) a.COREOS_UPCLOUD_REGION = region;
  const keys = await text(env, '/metadata/v1/public_keys');
  if (keys !== null) md.sshKeys = cleanSshKeys([keys], env.log, 'the UpCloud metadata');
  return md;
}

/** /metadata/v1/user_data as it is; null when there is none (404 or empty). */
async function userdata(env: ProviderEnv): Promise<Userdata> {
  const url = joinUrl(env.metadataUrl, '/metadata/v1/user_data');
  return userdataOrNull(await httpGet(url, env, { optional: true }), `upcloud: the userdata from ${showUrl(url)}`);
}

export const provider: MetadataProvider = { id: 'upcloud', metadata, userdata };
