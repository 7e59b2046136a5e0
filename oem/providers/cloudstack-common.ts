/**
 * CloudStack and Exoscale (a CloudStack cloud).
 *
 * CloudStack: the config drive when there is one, else the virtual router's HTTP service.
 *
 *   Config drive (env.configDrive under env.root, where the device labelled config-2 or CONFIG-2
 *   must be mounted; the agent does not mount it; Afterburn's cloudstack-configdrive):
 *     cloudstack/metadata/<name>.txt    one value each (instance_id, local_hostname, ...: the
 *                                       service's names with `_` for `-`); public_keys.txt
 *     cloudstack/userdata/user_data.txt the userdata (as Ignition reads it)
 *   Virtual router (Afterburn's cloudstack-metadata):
 *     http://<router>/latest/meta-data/<name>   (instance-id, local-hostname, ..., public-keys)
 *     http://<router>/latest/user-data
 *   The router is env.dhcpServer (`host[:port]`), else the SERVER_ADDRESS of the first
 *   systemd-networkd lease under <root>/run/systemd/netif/leases/ that has one (files in ifindex
 *   order). (CloudStack also answers the older /latest/<type> form; the meta-data/ one is what its
 *   documentation, cloud-init and Afterburn use.)
 *
 * Exoscale: the metadata service at env.metadataUrl (http://169.254.169.254), API version 1.0, as
 * Afterburn and cloud-init read it: /1.0/meta-data/<name>, /1.0/user-data. With env.dhcpServer
 * (--dhcp-server) the virtual router there is read instead, the CloudStack way.
 *
 * Attributes: COREOS_IPV4_PRIVATE/PUBLIC, COREOS_HOSTNAME (local-hostname; also the hostname), and
 * Afterburn's sets: COREOS_CLOUDSTACK_{INSTANCE_ID, LOCAL_HOSTNAME, PUBLIC_HOSTNAME,
 * AVAILABILITY_ZONE, IPV4_PUBLIC, IPV4_LOCAL, SERVICE_OFFERING, CLOUD_IDENTIFIER, VM_ID, HOSTNAME}
 * and COREOS_EXOSCALE_{INSTANCE_ID, LOCAL_HOSTNAME, PUBLIC_HOSTNAME, AVAILABILITY_ZONE, PUBLIC_IPV4,
 * LOCAL_IPV4, SERVICE_OFFERING, CLOUD_IDENTIFIER, VM_ID} (`metadata --format afterburn` writes
 * AFTERBURN_CLOUDSTACK_* / AFTERBURN_EXOSCALE_*). Only the values the source has are written. No
 * network configuration (DHCP's) and no boot check-in: neither platform expects one.
 */
import { isIP, isIPv4 } from 'node:net';
import { OemError } from '../../src/shared/errors.js';
import { httpGet, joinUrl, showUrl } from './http.js';
import { lstatEntry, readFileIn, resolveIn } from '../../src/shared/safe-fs.js';
import { LEASES_DIR, leaseEntries, readLeases } from './leases.js';
import { MAX_SMALL_BYTES, MAX_USERDATA_BYTES, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanSshKeys, hostnameProblem, shown } from './values.js';

export { LEASES_DIR };

/** `host[:port]` as a URL authority; throws an OemError for anything else. */
export function serverAuthority(value: string): string {
  const v = value.trim();
  let host: string;
  let port: string | undefined;
  const bracketed = /^\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?$/.exec(v);
  if (bracketed) {
    host = bracketed[1] ?? '';
    port = bracketed[2];
    if (isIP(host) !== 6) throw new OemError(`not a server address: ${shown(value)}`, { code: 'usage' });
    host = `[${host}]`;
  } else if (isIP(v) === 6) {
    host = `[${v}]`;
  } else {
    const m = /^([A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(v);
    if (!m || !m[1]) throw new OemError(`not a server address: ${shown(value)}`, { code: 'usage' });
    host = m[1];
    port = m[2];
    if (!isIPv4(host) && !/^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?$/.test(host)) {
      throw new OemError(`not a server address: ${shown(value)}`, { code: 'usage' });
    }
  }
  if (port !== undefined) {
    const n = Number(port);
    if (n < 1 || n > 65535) throw new OemError(`bad port in server address ${shown(value)}`, { code: 'usage' });
    return `${host}:${n}`;
  }
  return host;
}

/** SERVER_ADDRESS of a networkd lease file's text, if it has a valid one. */
export function leaseServerAddress(text: string): string | undefined {
  return serverAddressOfLease(leaseEntries(text));
}

function serverAddressOfLease(entries: Map<string, string>): string | undefined {
  const ip = entries.get('SERVER_ADDRESS')?.trim();
  return ip !== undefined && isIPv4(ip) ? ip : undefined;
}

/** The DHCP server from networkd's lease files under the root, or undefined. */
export async function dhcpServerFromLeases(env: ProviderEnv): Promise<string | undefined> {
  for await (const { entries } of readLeases(env, (file, err) => env.log(`skipped the lease file ${file}: ${(err as Error).message}`))) {
    const server = serverAddressOfLease(entries);
    if (server !== undefined) return server;
  }
  return undefined;
}

/** The metadata server's base URL (http://host[:port]); an OemError when there is no way to know it. */
export async function metadataBase(env: ProviderEnv, id: string): Promise<string> {
  if (env.dhcpServer !== undefined && env.dhcpServer.trim() !== '') return `http://${serverAuthority(env.dhcpServer)}`;
  const server = await dhcpServerFromLeases(env);
  if (server === undefined) {
    throw new OemError(`${id}: cannot find the metadata server: no DHCP lease with a SERVER_ADDRESS under ${LEASES_DIR}`, { code: 'network' });
  }
  return `http://${server}`;
}

/** A metadata value as text (trimmed); null when the service has none (404). */
async function text(url: string, env: ProviderEnv): Promise<string | null> {
  const buf = await httpGet(url, env, { optional: true });
  if (buf === null) return null;
  if (buf.length > MAX_SMALL_BYTES) {
    env.log(`ignoring ${url}: larger than ${MAX_SMALL_BYTES} bytes`);
    return null;
  }
  const value = buf.toString('utf8').trim();
  return value === '' ? null : value;
}

/** What a value is: an IPv4 address, a host name, or other text (an id, a zone, an offering's name). */
type Kind = 'ipv4' | 'hostname' | 'text';

/**
 * The metadata values Afterburn writes: the service's name (the config drive's is the same with `_`
 * for `-`), and the attribute suffix on CloudStack and on Exoscale.
 */
const VALUES: { name: string; kind: Kind; cloudstack: string; exoscale: string }[] = [
  { name: 'instance-id', kind: 'text', cloudstack: 'INSTANCE_ID', exoscale: 'INSTANCE_ID' },
  { name: 'local-hostname', kind: 'hostname', cloudstack: 'LOCAL_HOSTNAME', exoscale: 'LOCAL_HOSTNAME' },
  { name: 'public-hostname', kind: 'hostname', cloudstack: 'PUBLIC_HOSTNAME', exoscale: 'PUBLIC_HOSTNAME' },
  { name: 'availability-zone', kind: 'text', cloudstack: 'AVAILABILITY_ZONE', exoscale: 'AVAILABILITY_ZONE' },
  { name: 'public-ipv4', kind: 'ipv4', cloudstack: 'IPV4_PUBLIC', exoscale: 'PUBLIC_IPV4' },
  { name: 'local-ipv4', kind: 'ipv4', cloudstack: 'IPV4_LOCAL', exoscale: 'LOCAL_IPV4' },
  { name: 'service-offering', kind: 'text', cloudstack: 'SERVICE_OFFERING', exoscale: 'SERVICE_OFFERING' },
  { name: 'cloud-identifier', kind: 'text', cloudstack: 'CLOUD_IDENTIFIER', exoscale: 'CLOUD_IDENTIFIER' },
  { name: 'vm-id', kind: 'text', cloudstack: 'VM_ID', exoscale: 'VM_ID' },
];

/** A value for an environment file line: no control characters, at most 255 characters. */
// eslint-disable-next-line no-control-regex
const TEXT_VALUE = /^[^\x00-\x1f\x7f]{1,255}$/;

/**
 * The value when it is one of its kind; else undefined with a log line. Host names keep their case
 * in the attributes (as the platform gave them, one final dot removed).
 */
function checked(value: string | null, kind: Kind, what: string, log: (line: string) => void): string | undefined {
  if (value === null) return undefined;
  if (kind === 'ipv4') return cleanIp(value, log, what, 4);
  if (kind === 'hostname') {
    const why = hostnameProblem(value);
    if (why === undefined) return value.replace(/\.$/, '');
    log(`ignoring ${what} ${shown(value)}: it ${why}`);
    return undefined;
  }
  if (TEXT_VALUE.test(value)) return value;
  log(`ignoring ${what} ${shown(value)}: not a one-line value of at most 255 characters`);
  return undefined;
}

/** Where a CloudStack-style provider reads: one value by its service name, the keys, the userdata. */
interface Source {
  /** What the log lines call it. */
  label: string;
  value(name: string): Promise<string | null>;
  publicKeys(): Promise<string | null>;
  userdata(): Promise<Buffer | null>;
}

function httpSource(base: string, version: string, env: ProviderEnv): Source {
  const meta = (name: string) => text(joinUrl(base, `${version}/meta-data/${name}`), env);
  return {
    label: showUrl(joinUrl(base, `${version}/meta-data/`)),
    value: meta,
    publicKeys: () => meta('public-keys'),
    userdata: () => httpGet(joinUrl(base, `${version}/user-data`), env, { optional: true }),
  };
}

const DRIVE_METADATA = '/cloudstack/metadata';
const DRIVE_USERDATA = '/cloudstack/userdata/user_data.txt';

/**
 * The CloudStack config drive at env.configDrive (found under env.root, links resolved inside it):
 * its host directory when it has cloudstack/metadata/, else null (a problem on the way is logged).
 */
async function cloudstackDrive(env: ProviderEnv): Promise<string | null> {
  try {
    const host = await resolveIn(env.root, env.configDrive);
    if (host === null || (await lstatEntry(host))?.kind !== 'dir') return null;
    const meta = await resolveIn(host, DRIVE_METADATA);
    return meta !== null && (await lstatEntry(meta))?.kind === 'dir' ? host : null;
  } catch (err) {
    if (!(err instanceof OemError)) throw err;
    env.log(`config drive ${env.configDrive}: ${err.message}; ignored`);
    return null;
  }
}

function driveSource(host: string, env: ProviderEnv): Source {
  const read = async (rel: string, limit: number): Promise<Buffer | null> => {
    try {
      // The drive is the boundary: links on it never lead off it.
      return await readFileIn(host, rel, limit, `${env.configDrive}${rel}`);
    } catch (err) {
      if (!(err instanceof OemError)) throw err;
      env.log(`${err.message}; ignored`);
      return null;
    }
  };
  const value = async (file: string): Promise<string | null> => {
    const b = await read(`${DRIVE_METADATA}/${file}.txt`, MAX_SMALL_BYTES);
    const v = b?.toString('utf8').trim() ?? '';
    return v === '' ? null : v;
  };
  return {
    label: `${env.configDrive}${DRIVE_METADATA}/`,
    value: (name) => value(name.replaceAll('-', '_')),
    publicKeys: () => value('public_keys'),
    userdata: () => read(DRIVE_USERDATA, MAX_USERDATA_BYTES),
  };
}

/** Where `id` reads: the CloudStack config drive, the router, or (Exoscale) the metadata service. */
async function source(env: ProviderEnv, id: string): Promise<Source> {
  if (id === 'exoscale') {
    if (env.dhcpServer !== undefined && env.dhcpServer.trim() !== '') return httpSource(await metadataBase(env, id), 'latest', env);
    return httpSource(env.metadataUrl, '1.0', env);
  }
  const drive = await cloudstackDrive(env);
  if (drive !== null) return driveSource(drive, env);
  return httpSource(await metadataBase(env, id), 'latest', env);
}

/** A CloudStack-style provider under the id given (cloudstack, exoscale). */
export function cloudstackProvider(id: string): MetadataProvider {
  const prefix = id === 'exoscale' ? 'COREOS_EXOSCALE_' : 'COREOS_CLOUDSTACK_';
  return {
    id,
    async metadata(env: ProviderEnv): Promise<Metadata> {
      const src = await source(env, id);
      const [keys, ...values] = await Promise.all([src.publicKeys(), ...VALUES.map((v) => src.value(v.name))]);
      const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
      const a = md.attributes;
      const got: Record<string, string> = {};
      VALUES.forEach((v, i) => {
        const value = checked(values[i] ?? null, v.kind, `the ${id} ${v.name}`, env.log);
        if (value === undefined) return;
        got[v.name] = value;
        a[prefix + (id === 'exoscale' ? v.exoscale : v.cloudstack)] = value;
      });
      if (got['local-ipv4'] !== undefined) a.COREOS_IPV4_PRIVATE = got['local-ipv4'];
      if (got['public-ipv4'] !== undefined) a.COREOS_IPV4_PUBLIC = got['public-ipv4'];
      const localHostname = got['local-hostname'];
      const hostname = localHostname === undefined ? undefined : cleanHostname(localHostname, env.log, `the ${id} local-hostname`);
      if (localHostname !== undefined && hostname !== undefined) {
        md.hostname = hostname;
        a.COREOS_HOSTNAME = hostname;
        // Afterburn's documentation lists CLOUDSTACK_HOSTNAME too (coreos-metadata wrote it): the local-hostname.
        if (id !== 'exoscale') a.COREOS_CLOUDSTACK_HOSTNAME = localHostname;
      }
      if (keys !== null) md.sshKeys = cleanSshKeys([keys], env.log, `${id} public-keys`);
      env.log(`${id}: read ${src.label}`);
      return md;
    },
    async userdata(env: ProviderEnv): Promise<Userdata> {
      const src = await source(env, id);
      return userdataOrNull(await src.userdata(), `the ${id} user-data`);
    },
  };
}
