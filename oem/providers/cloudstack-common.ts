/**
 * CloudStack and Exoscale (a CloudStack cloud): the virtual router that gave the instance its DHCP
 * lease serves metadata and userdata over HTTP:
 *
 *   http://<router>/latest/meta-data/{local-ipv4,public-ipv4,local-hostname,public-keys}
 *   http://<router>/latest/user-data
 *
 * (CloudStack also answers the older /latest/<type> form; the meta-data/ one is what its
 * documentation, cloud-init and Afterburn use.) The router is env.dhcpServer (`host[:port]`), else
 * the SERVER_ADDRESS of the first systemd-networkd lease under <root>/run/systemd/netif/leases/
 * that has one (files in ifindex order).
 */
import { readdir } from 'node:fs/promises';
import { isIP, isIPv4 } from 'node:net';
import { OemError } from '../../src/shared/errors.js';
import { httpGet, joinUrl } from './http.js';
import { readFileIn, resolveIn } from '../../src/shared/safe-fs.js';
import { MAX_SMALL_BYTES, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanSshKeys, shown } from './values.js';

export const LEASES_DIR = '/run/systemd/netif/leases';

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
  for (const line of text.split('\n')) {
    const m = /^SERVER_ADDRESS=(.*)$/.exec(line.replace(/\r$/, ''));
    if (m) {
      const ip = (m[1] ?? '').trim();
      return isIPv4(ip) ? ip : undefined;
    }
  }
  return undefined;
}

/** The DHCP server from networkd's lease files under the root, or undefined. */
export async function dhcpServerFromLeases(env: ProviderEnv): Promise<string | undefined> {
  const dir = await resolveIn(env.root, LEASES_DIR);
  if (dir === null) return undefined;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
  const order = (n: string) => (/^\d+$/.test(n) ? Number(n) : Number.MAX_SAFE_INTEGER);
  names.sort((a, b) => order(a) - order(b) || (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    if (name.startsWith('.')) continue;
    let buf: Buffer | null;
    try {
      buf = await readFileIn(dir, `/${name}`, MAX_SMALL_BYTES);
    } catch (err) {
      env.log(`skipped the lease file ${LEASES_DIR}/${name}: ${(err as Error).message}`);
      continue;
    }
    if (buf === null) continue;
    const server = leaseServerAddress(buf.toString('utf8'));
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

/** A CloudStack-style provider under the id given. */
export function cloudstackProvider(id: string): MetadataProvider {
  return {
    id,
    async metadata(env: ProviderEnv): Promise<Metadata> {
      const base = await metadataBase(env, id);
      const meta = (key: string) => text(joinUrl(base, `latest/meta-data/${key}`), env);
      const [local, pub, host, keys] = await Promise.all([meta('local-ipv4'), meta('public-ipv4'), meta('local-hostname'), meta('public-keys')]);
      const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
      const privateIp = cleanIp(local, env.log, `the ${id} local-ipv4`, 4);
      if (privateIp !== undefined) md.attributes.COREOS_IPV4_PRIVATE = privateIp;
      const publicIp = cleanIp(pub, env.log, `the ${id} public-ipv4`, 4);
      if (publicIp !== undefined) md.attributes.COREOS_IPV4_PUBLIC = publicIp;
      const hostname = cleanHostname(host, env.log, `the ${id} local-hostname`);
      if (hostname !== undefined) {
        md.hostname = hostname;
        md.attributes.COREOS_HOSTNAME = hostname;
      }
      if (keys !== null) md.sshKeys = cleanSshKeys([keys], env.log, `${id} public-keys`);
      return md;
    },
    async userdata(env: ProviderEnv): Promise<Userdata> {
      const base = await metadataBase(env, id);
      const data = await httpGet(joinUrl(base, 'latest/user-data'), env, { optional: true });
      return userdataOrNull(data, `the ${id} user-data`);
    },
  };
}
