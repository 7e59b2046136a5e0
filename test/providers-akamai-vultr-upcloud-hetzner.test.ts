/**
 * The akamai, vultr, upcloud and hetzner providers against mock metadata services on 127.0.0.1
 * (ephemeral ports) that answer in the platforms' documented formats (and Afterburn's test
 * fixtures); and the agent's subcommands end to end on temporary roots. Every env and every CLI call
 * points metadataUrl at the local mock: nothing here talks to 169.254.169.254.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { agent, agentArgs, deadUrl, edKey, type Reply, type Route, type Seen, useMetadataMock } from './helpers/metadata-mock.js';
import { provider as akamai, TOKEN_TTL_SECONDS } from '../oem/providers/akamai.js';
import { provider as hetzner } from '../oem/providers/hetzner.js';
import { provider as upcloud } from '../oem/providers/upcloud.js';
import { provider as vultr } from '../oem/providers/vultr.js';
import type { MetadataProvider, ProviderEnv } from '../oem/providers/types.js';
import { agentPlatform } from '../src/shared/platforms.js';

const KEY = { a: edKey('alice@example'), b: edKey('bob@example'), c: edKey('carol@example') };

const m = useMetadataMock('oem-providers-avuh-');
const { mock, logs, makeRoot } = m;
const env = (extra: Partial<ProviderEnv> = {}): ProviderEnv => m.env(undefined, extra);
const json = (v: unknown): Reply => ({ body: JSON.stringify(v), headers: { 'content-type': 'application/json' } });
const logged = (re: RegExp) => expect(logs.some((l) => re.test(l)), `a log line matching ${re}; got:\n${logs.join('\n')}`).toBe(true);
/** `full` without `keys`. */
const without = (full: Record<string, string>, ...keys: string[]) => Object.fromEntries(Object.entries(full).filter(([k]) => !keys.includes(k)));
const HUGE = 'a'.repeat(100_000);

// ---------------------------------------------------------------------------------------------
// Akamai (Linode)

const AK_TOKEN = 'e80eb80986f17fcd3df8fcb6ea944774cae47b26ed6d68df63a15b294b7a6e3f';
const AK_USERDATA = '#cloud-config\nhostname: from-linode\n';

function akInstance(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 12345678,
    label: 'my-linode',
    region: 'us-ord',
    type: 'g6-nanode-1',
    specs: { vcpus: 1, memory: 1024, gpus: 0, transfer: 1000, disk: 25600 },
    backups: { enabled: false, status: null },
    host_uuid: 'a631b16d14534d84e2830da16d1b28e1d08d24df',
    tags: ['foo', 'bar', 'baz'],
    ...over,
  };
}

function akNetwork(over: { ipv4?: Record<string, unknown>; ipv6?: Record<string, unknown> } = {}): Record<string, unknown> {
  return {
    interfaces: [{ id: 12345678, purpose: 'public', label: null, ipam_address: null }],
    ipv4: { public: ['1.2.3.4/32'], private: ['192.168.1.1/32'], shared: ['5.6.7.8/32'], ...over.ipv4 },
    ipv6: {
      slaac: '2600:3c06::f03c:94ff:fecb:c10b/128',
      ranges: ['2600:3c06:e001:2::/64'],
      link_local: 'fe80::f03c:94ff:fecb:c10b/128',
      shared_ranges: ['2600:3c06:e001:3::/56'],
      ...over.ipv6,
    },
  };
}

function akRoutes(over: Record<string, Route> = {}): Record<string, Route> {
  return {
    'PUT /v1/token': (req) => (req.headers['metadata-token-expiry-seconds'] === TOKEN_TTL_SECONDS ? { body: AK_TOKEN, headers: { 'content-type': 'text/plain' } } : { status: 400, body: 'Metadata-Token-Expiry-Seconds is required' }),
    '/v1/instance': json(akInstance()),
    '/v1/network': json(akNetwork()),
    '/v1/ssh-keys': json({ users: { root: [KEY.a], alice: [KEY.b, KEY.c] } }),
    '/v1/user-data': { body: Buffer.from(AK_USERDATA).toString('base64') },
    ...over,
  };
}

/** As the Linode service: a GET without a valid token is 401. */
function akGuard(req: Seen): Reply | undefined {
  if (req.method === 'GET' && req.headers['metadata-token'] !== AK_TOKEN) return { status: 401, body: 'Unauthorized' };
  return undefined;
}

function akSetup(over: Record<string, Route> = {}): void {
  mock.reset(akRoutes(over));
  mock.guard = akGuard;
}

const AK_ATTRS: Record<string, string> = {
  COREOS_AKAMAI_INSTANCE_ID: '12345678',
  COREOS_AKAMAI_INSTANCE_HOST_UUID: 'a631b16d14534d84e2830da16d1b28e1d08d24df',
  COREOS_AKAMAI_INSTANCE_LABEL: 'my-linode',
  COREOS_AKAMAI_INSTANCE_REGION: 'us-ord',
  COREOS_AKAMAI_INSTANCE_TYPE: 'g6-nanode-1',
  COREOS_AKAMAI_INSTANCE_TAGS: 'foo:bar:baz',
  COREOS_AKAMAI_PUBLIC_IPV4_0: '1.2.3.4',
  COREOS_AKAMAI_PRIVATE_IPV4_0: '192.168.1.1',
  COREOS_AKAMAI_SHARED_IPV4_0: '5.6.7.8',
  COREOS_AKAMAI_IPV6_SLAAC: '2600:3c06::f03c:94ff:fecb:c10b',
  COREOS_AKAMAI_IPV6_LINK_LOCAL: 'fe80::f03c:94ff:fecb:c10b',
  COREOS_AKAMAI_IPV6_RANGE_0: '2600:3c06:e001:2::',
  COREOS_AKAMAI_IPV6_SHARED_RANGE_0: '2600:3c06:e001:3::',
  COREOS_IPV4_PUBLIC: '1.2.3.4',
  COREOS_IPV4_PRIVATE: '192.168.1.1',
  COREOS_IPV6_PUBLIC: '2600:3c06::f03c:94ff:fecb:c10b',
};
const AK_NETWORK_KEYS = Object.keys(AK_ATTRS).filter((k) => k.includes('IPV'));

describe('akamai', () => {
  it('takes a token, then reads instance, network, keys and userdata with it', async () => {
    akSetup();
    const md = await akamai.metadata(env());
    expect(md.attributes).toEqual(AK_ATTRS);
    expect(md.hostname).toBeUndefined();
    // Every user's keys, in the order of the user names.
    expect(md.sshKeys).toEqual([KEY.b, KEY.c, KEY.a]);
    expect(md.networkUnits).toEqual([]);
    expect(mock.seen[0]).toMatchObject({ method: 'PUT', path: '/v1/token' });
    expect(mock.seen[0]!.headers['metadata-token-expiry-seconds']).toBe('300');
    const gets = mock.seen.filter((s) => s.method === 'GET');
    expect(gets.map((s) => s.path)).toEqual(['/v1/instance', '/v1/network', '/v1/ssh-keys']);
    expect(gets.every((s) => s.headers['metadata-token'] === AK_TOKEN && s.headers.accept === 'application/json')).toBe(true);
    expect((await akamai.userdata(env()))?.toString()).toBe(AK_USERDATA);
    expect(mock.seen.at(-1)).toMatchObject({ method: 'GET', path: '/v1/user-data' });
    expect(mock.seen.at(-1)!.headers['metadata-token']).toBe(AK_TOKEN);
    expect(logs).toEqual([]);
  });

  it.each([
    ['no /v1/instance', { '/v1/instance': { status: 404 } }, Object.keys(AK_ATTRS).filter((k) => k.includes('INSTANCE'))],
    ['no /v1/network', { '/v1/network': { status: 404 } }, AK_NETWORK_KEYS],
    ['no label, tags or region', { '/v1/instance': json(akInstance({ label: undefined, tags: undefined, region: null })) }, ['COREOS_AKAMAI_INSTANCE_LABEL', 'COREOS_AKAMAI_INSTANCE_TAGS', 'COREOS_AKAMAI_INSTANCE_REGION']],
    ['no IPv6', { '/v1/network': json({ ipv4: akNetwork().ipv4 }) }, AK_NETWORK_KEYS.filter((k) => k.includes('IPV6'))],
    ['no private or shared IPv4', { '/v1/network': json(akNetwork({ ipv4: { private: [], shared: undefined } })) }, ['COREOS_AKAMAI_PRIVATE_IPV4_0', 'COREOS_AKAMAI_SHARED_IPV4_0', 'COREOS_IPV4_PRIVATE']],
  ] as [string, Record<string, Route>, string[]][])('%s: those values are absent, the rest intact', async (_what, over, gone) => {
    akSetup(over);
    const md = await akamai.metadata(env());
    expect(md.attributes).toEqual(without(AK_ATTRS, ...gone));
    expect(md.sshKeys).toHaveLength(3);
  });

  it('no keys, no userdata: 404 and empty are none', async () => {
    akSetup({ '/v1/ssh-keys': { status: 404 }, '/v1/user-data': { status: 404 } });
    const md = await akamai.metadata(env());
    expect(md.sshKeys).toEqual([]);
    expect(md.attributes).toEqual(AK_ATTRS);
    expect(await akamai.userdata(env())).toBeNull();
    akSetup({ '/v1/ssh-keys': json({ users: {} }), '/v1/user-data': { body: '' } });
    expect((await akamai.metadata(env())).sshKeys).toEqual([]);
    expect(await akamai.userdata(env())).toBeNull();
  });

  it('retries a 500 (token and documents), then reads', async () => {
    const token = akRoutes()['PUT /v1/token'] as (req: Seen) => Reply;
    akSetup({ 'PUT /v1/token': (req) => (mock.hits('/v1/token') === 1 ? { status: 503 } : token(req)), '/v1/network': [{ status: 500 }, json(akNetwork())] });
    const md = await akamai.metadata(env());
    expect(md.attributes).toEqual(AK_ATTRS);
    expect(mock.hits('/v1/token')).toBe(2);
    expect(mock.hits('/v1/network')).toBe(2);
    logged(/^PUT http:\/\/127\.0\.0\.1:\d+\/v1\/token failed \(attempt 1\/3\): HTTP 503/);
    logged(/^GET http:\/\/127\.0\.0\.1:\d+\/v1\/network failed \(attempt 1\/3\): HTTP 500/);
  });

  it('a dead service: a clear error naming the token URL after the tries', async () => {
    const dead = await deadUrl();
    await expect(akamai.metadata(env({ metadataUrl: dead }))).rejects.toThrow(`PUT ${dead}/v1/token failed after 3 attempts: fetch failed: ECONNREFUSED`);
    await expect(akamai.userdata(env({ metadataUrl: dead }))).rejects.toThrow(/\/v1\/token failed after 3 attempts/);
  });

  it('the token: refused, missing or stale as the service answers it; a new one once on a 401', async () => {
    // Refused: nothing is read without it.
    akSetup({ 'PUT /v1/token': { status: 403, body: 'Forbidden' } });
    await expect(akamai.metadata(env())).rejects.toThrow(/^PUT http:\/\/127\.0\.0\.1:\d+\/v1\/token failed: HTTP 403/);
    expect(mock.seen.filter((s) => s.method === 'GET')).toEqual([]);
    // An empty token.
    akSetup({ 'PUT /v1/token': { body: '\n' } });
    await expect(akamai.metadata(env())).rejects.toThrow(/^akamai: http:\/\/127\.0\.0\.1:\d+\/v1\/token gave an empty token$/);
    // A token the service then refuses: 401, one new token, 401 again: an error naming the URL.
    akSetup({ 'PUT /v1/token': { body: 'stale-token' } });
    await expect(akamai.metadata(env())).rejects.toThrow(/^GET http:\/\/127\.0\.0\.1:\d+\/v1\/instance failed: HTTP 401/);
    expect(mock.hits('/v1/token')).toBe(2);
    // An expired token: the second one is good.
    akSetup({ 'PUT /v1/token': [{ body: 'expired-token' }, { body: AK_TOKEN }] });
    expect((await akamai.metadata(env())).attributes).toEqual(AK_ATTRS);
    logged(/^akamai: http:\/\/127\.0\.0\.1:\d+\/v1\/instance refused the token \(HTTP 401\); getting a new one$/);
  });

  it('hostile values are dropped with a log line: shell, newlines, huge, bad addresses, garbage keys and userdata', async () => {
    akSetup({
      '/v1/instance': json(
        akInstance({ id: '12; reboot', label: '$(reboot)', region: 'us-ord\nCOREOS_X=1', type: HUGE, host_uuid: 'zz zz', tags: ['ok', '$(reboot)', 'a\nb', "it's", 42] }),
      ),
      '/v1/network': json(
        akNetwork({
          ipv4: { public: ['1.2.3.4/32\nDNS=6.6.6.6', '999.1.1.1/32', '1.2.3.4/33', 'fe80::1/64', '9.9.9.9'], private: 'nope', shared: [{ a: 1 }] },
          ipv6: { slaac: '$(reboot)', link_local: '10.0.0.1/8', ranges: ['2600:3c06:e001:2::/129', '2600:3c06:e001:4::/64'], shared_ranges: null },
        }),
      ),
      '/v1/ssh-keys': json({ users: { root: ['garbage', KEY.a, `${KEY.b}\ncommand="reboot" ssh-rsa AAAA`], '../../etc/passwd': [KEY.c], bob: 'ssh-rsa AAAA' } }),
      '/v1/user-data': { body: '#cloud-config\n$(reboot)' },
    });
    const md = await akamai.metadata(env());
    expect(md.attributes).toEqual({
      COREOS_AKAMAI_INSTANCE_TAGS: 'ok',
      COREOS_AKAMAI_PUBLIC_IPV4_4: '9.9.9.9',
      COREOS_AKAMAI_IPV6_RANGE_1: '2600:3c06:e001:4::',
      COREOS_IPV4_PUBLIC: '9.9.9.9',
    });
    // The user name is only an ordering: root's keys, then those of "../../etc/passwd"; the broken half of a line is dropped.
    expect(md.sshKeys).toEqual([KEY.c, KEY.a, KEY.b]);
    for (const re of [
      /^akamai: ignoring the instance id "12; reboot"/,
      /^akamai: ignoring the instance label "\$\(reboot\)"/,
      /^akamai: ignoring the instance region "us-ord\\nCOREOS_X=1"/,
      /^akamai: ignoring the instance type "a{60,}…"/,
      /^akamai: ignoring the instance host_uuid "zz zz"/,
      /^akamai: ignoring the tag "\$\(reboot\)"/,
      /^akamai: ignoring the tag "42"/,
      /^akamai: ignoring the shared IPv4 address 0: not a string \("\{\\"a\\":1\}"\)$/,
      /^akamai: ignoring the public IPv4 address 0 "1\.2\.3\.4\/32\\nDNS=6\.6\.6\.6": not an IPv4 address or network$/,
      /^akamai: ignoring the public IPv4 address 2 "1\.2\.3\.4\/33"/,
      /^akamai: ignoring the public IPv4 address 3 "fe80::1\/64"/,
      /^akamai: ignoring the private IPv4 addresses: not a list$/,
      /^akamai: ignoring the IPv6 SLAAC address "\$\(reboot\)"/,
      /^akamai: ignoring the IPv6 link-local address "10\.0\.0\.1\/8"/,
      /^akamai: ignoring the keys of the user "bob": not a list$/,
      /^ignoring an invalid SSH key: .*"garbage"/,
    ]) {
      logged(re);
    }
    // Userdata that is not base64 is not used.
    expect(await akamai.userdata(env())).toBeNull();
    logged(/^akamai: ignoring the userdata from http:\/\/127\.0\.0\.1:\d+\/v1\/user-data is not valid base64 \(\d+ bytes\)$/);
  });

  it('documents: too large is ignored with a log line; not JSON is an error naming the URL', async () => {
    akSetup({ '/v1/instance': { body: JSON.stringify(akInstance({ pad: 'x'.repeat(2 * 1024 * 1024) })) } });
    const md = await akamai.metadata(env());
    expect(md.attributes).toEqual(without(AK_ATTRS, ...Object.keys(AK_ATTRS).filter((k) => k.includes('INSTANCE'))));
    logged(/^akamai: http:\/\/127\.0\.0\.1:\d+\/v1\/instance: \d+ bytes, more than the 1048576 allowed; ignored$/);
    akSetup({ '/v1/network': { body: 'ipv4.public: 1.2.3.4/32' } });
    await expect(akamai.metadata(env())).rejects.toThrow(/^akamai: http:\/\/127\.0\.0\.1:\d+\/v1\/network is not valid JSON/);
    akSetup({ '/v1/ssh-keys': json(['ssh-ed25519 AAAA']) });
    await expect(akamai.metadata(env())).rejects.toThrow(/\/v1\/ssh-keys is not a JSON object$/);
  });
});

// ---------------------------------------------------------------------------------------------
// Vultr and UpCloud: plain-text values, the same shape

interface TextPlatform {
  id: 'vultr' | 'upcloud';
  provider: MetadataProvider;
  paths: { hostname: string; id: string; region: string; keys: string; userdata: string };
  values: { hostname: string; id: string; region: string };
  attrs: Record<string, string>;
}

const TEXT_PLATFORMS: TextPlatform[] = [
  {
    id: 'vultr',
    provider: vultr,
    paths: { hostname: '/v1/hostname', id: '/v1/instanceid', region: '/v1/region/regioncode', keys: '/v1/public-keys', userdata: '/user-data/user-data' },
    values: { hostname: 'vultr-guest', id: 'a747bfz6385e', region: 'EWR' },
    attrs: { COREOS_HOSTNAME: 'vultr-guest', COREOS_VULTR_HOSTNAME: 'vultr-guest', COREOS_VULTR_INSTANCE_ID: 'a747bfz6385e', COREOS_VULTR_REGION_CODE: 'EWR' },
  },
  {
    id: 'upcloud',
    provider: upcloud,
    paths: { hostname: '/metadata/v1/hostname', id: '/metadata/v1/instance_id', region: '/metadata/v1/region', keys: '/metadata/v1/public_keys', userdata: '/metadata/v1/user_data' },
    values: { hostname: 'metadata.example.com', id: '00bf9504-a4cb-4839-88ff-124a2c95e169', region: 'de-fra1' },
    attrs: {
      COREOS_HOSTNAME: 'metadata.example.com',
      COREOS_UPCLOUD_HOSTNAME: 'metadata.example.com',
      COREOS_UPCLOUD_INSTANCE_ID: '00bf9504-a4cb-4839-88ff-124a2c95e169',
      COREOS_UPCLOUD_REGION: 'de-fra1',
    },
  },
];

const TEXT_USERDATA = '#cloud-config\nusers: []\n';

function textRoutes(p: TextPlatform, over: Record<string, Route> = {}): Record<string, Route> {
  return {
    [p.paths.hostname]: { body: p.values.hostname },
    [p.paths.id]: { body: `${p.values.id}\n` },
    [p.paths.region]: { body: p.values.region },
    // As Afterburn's fixture: one key a line, the second indented.
    [p.paths.keys]: { body: `${KEY.a}\n   ${KEY.b}\n` },
    [p.paths.userdata]: { body: TEXT_USERDATA },
    ...over,
  };
}

describe.each(TEXT_PLATFORMS)('$id', (p) => {
  const name = (k: 'HOSTNAME' | 'ID' | 'REGION') => Object.keys(p.attrs).find((a) => a.startsWith(`COREOS_${p.id.toUpperCase()}_`) && a.includes(k === 'ID' ? 'INSTANCE_ID' : k))!;

  it('reads hostname, instance id, region, keys and userdata; no token or header needed', async () => {
    mock.reset(textRoutes(p));
    const md = await p.provider.metadata(env());
    expect(md).toEqual({ attributes: p.attrs, hostname: p.values.hostname, sshKeys: [KEY.a, KEY.b], networkUnits: [] });
    expect(mock.seen.map((s) => `${s.method} ${s.path}`)).toEqual([p.paths.hostname, p.paths.id, p.paths.region, p.paths.keys].map((x) => `GET ${x}`));
    expect(mock.seen.every((s) => s.headers['metadata-token'] === undefined)).toBe(true);
    expect((await p.provider.userdata(env()))?.toString()).toBe(TEXT_USERDATA);
    expect(logs).toEqual([]);
  });

  it.each(['hostname', 'id', 'region', 'keys', 'userdata'] as const)('no %s (404, then empty): that value is absent, the rest intact', async (what) => {
    // Userdata is bytes as given (whitespace is the userdata action's "none"); values are trimmed.
    for (const reply of what === 'userdata' ? [{ status: 404 }, { body: '' }] : [{ status: 404 }, { body: '' }, { body: ' \n' }]) {
      mock.reset(textRoutes(p, { [p.paths[what]]: reply }));
      const md = await p.provider.metadata(env());
      const gone = what === 'hostname' ? ['COREOS_HOSTNAME', name('HOSTNAME')] : what === 'id' ? [name('ID')] : what === 'region' ? [name('REGION')] : [];
      expect(md.attributes).toEqual(without(p.attrs, ...gone));
      expect(md.hostname).toBe(what === 'hostname' ? undefined : p.values.hostname);
      expect(md.sshKeys).toEqual(what === 'keys' ? [] : [KEY.a, KEY.b]);
      const ud = await p.provider.userdata(env());
      expect(ud?.toString() ?? null).toBe(what === 'userdata' ? null : TEXT_USERDATA);
    }
  });

  it('retries a 500 and uses what follows; a 403 is an error, not absence', async () => {
    mock.reset(textRoutes(p, { [p.paths.region]: [{ status: 500 }, { status: 503 }, { body: p.values.region }] }));
    expect((await p.provider.metadata(env())).attributes).toEqual(p.attrs);
    expect(mock.hits(p.paths.region)).toBe(3);
    logged(new RegExp(`^GET http://127\\.0\\.0\\.1:\\d+${p.paths.region} failed \\(attempt 2/3\\): HTTP 503`));
    mock.reset(textRoutes(p, { [p.paths.id]: { status: 403, body: 'Forbidden' } }));
    await expect(p.provider.metadata(env())).rejects.toThrow(new RegExp(`^GET http://127\\.0\\.0\\.1:\\d+${p.paths.id} failed: HTTP 403`));
  });

  it('a dead service: a clear error naming the URL after the tries', async () => {
    const dead = await deadUrl();
    await expect(p.provider.metadata(env({ metadataUrl: dead }))).rejects.toThrow(`GET ${dead}${p.paths.hostname} failed after 3 attempts: fetch failed: ECONNREFUSED`);
    await expect(p.provider.userdata(env({ metadataUrl: dead }))).rejects.toThrow(`GET ${dead}${p.paths.userdata} failed after 3 attempts: fetch failed: ECONNREFUSED`);
  });

  it('hostile values are dropped with a log line: newlines, shell, huge, garbage keys', async () => {
    mock.reset(
      textRoutes(p, {
        [p.paths.hostname]: { body: 'evil\nhost' },
        [p.paths.id]: { body: '$(reboot)' },
        [p.paths.region]: { body: HUGE },
        [p.paths.keys]: { body: `garbage\n${KEY.c}\n-----BEGIN OPENSSH PRIVATE KEY-----\ncommand="reboot" ssh-rsa AAAA` },
      }),
    );
    const md = await p.provider.metadata(env());
    expect(md.attributes).toEqual({});
    expect(md.hostname).toBeUndefined();
    expect(md.sshKeys).toEqual([KEY.c]);
    logged(new RegExp(`^ignoring ${p.id}: the hostname "evil\\\\nhost": it contains control characters`));
    logged(new RegExp(`^${p.id}: ignoring the instance id "\\$\\(reboot\\)": not a valid value$`));
    logged(new RegExp(`^${p.id}: ignoring the region( code)? "a{60,}…"`));
    expect(logs.filter((l) => l.startsWith('ignoring an invalid SSH key'))).toHaveLength(3);
    // A body beyond the small-value limit is not even read as a value.
    mock.reset(textRoutes(p, { [p.paths.hostname]: { body: 'h'.repeat(300 * 1024) } }));
    expect((await p.provider.metadata(env())).hostname).toBeUndefined();
    logged(new RegExp(`^${p.id}: http://127\\.0\\.0\\.1:\\d+${p.paths.hostname}: 307200 bytes, more than the 262144 allowed; ignored$`));
  });
});

// ---------------------------------------------------------------------------------------------
// Hetzner Cloud

const HZ = '/hetzner/v1/metadata';
const HZ_USERDATA = '#cloud-config\nruncmd: []\n';

const HZ_NETWORK_CONFIG = `version: 1
config:
  - type: physical
    name: eth0
    mac_address: 96:00:01:02:03:04
    subnets:
      - type: dhcp
        ipv4: true
      - type: static
        address: 2a01:4f8:c17:1234::1/64
        ipv6: true
        gateway: fe80::1
        dns_nameservers:
          - 2a01:4ff:ff00::add:2
          - 2a01:4ff:ff00::add:1
`;

function hzMetadata(over: Record<string, string> = {}): string {
  const fields: Record<string, string> = {
    'availability-zone': 'fsn1-dc14',
    hostname: 'my-server',
    'instance-id': '12345678',
    'local-ipv4': "''",
    'public-ipv4': '192.0.2.10',
    region: 'eu-central',
    'public-keys': `\n  - ${KEY.a}`,
    vendor_data: '"blah blah blah"',
    'network-config': '\n' + HZ_NETWORK_CONFIG.replace(/^/gm, '  ').trimEnd(),
    ...over,
  };
  return Object.entries(fields)
    .filter(([, v]) => v !== '')
    .map(([k, v]) => `${k}: ${v}`)
    .join('\n');
}

const HZ_PRIVATE = `- ip: 10.0.0.2
  alias_ips: []
  interface_num: 2
  mac_address: 86:00:00:98:40:6e
  network_id: 4124728
  network_name: foo
  network: 10.0.0.0/16
  subnet: 10.0.0.0/24
  gateway: 10.0.0.1
- ip: 10.128.0.2
  alias_ips: []
  interface_num: 1
  mac_address: 86:00:00:98:40:6d
  network_id: 4451335
  network_name: bar
  network: 10.128.0.0/16
  subnet: 10.128.0.0/16
  gateway: 10.128.0.1
`;

function hzRoutes(over: Record<string, Route> = {}): Record<string, Route> {
  return {
    [HZ]: { body: hzMetadata() },
    [`${HZ}/private-networks`]: { body: HZ_PRIVATE },
    [`${HZ}/hostname`]: { body: 'my-server' },
    [`${HZ}/public-keys`]: json([KEY.a, KEY.b]),
    [`${HZ}/network-config`]: { body: HZ_NETWORK_CONFIG },
    '/hetzner/v1/userdata': { body: HZ_USERDATA },
    ...over,
  };
}

const HZ_ATTRS: Record<string, string> = {
  COREOS_HETZNER_AVAILABILITY_ZONE: 'fsn1-dc14',
  COREOS_HETZNER_HOSTNAME: 'my-server',
  COREOS_HETZNER_INSTANCE_ID: '12345678',
  COREOS_HETZNER_PUBLIC_IPV4: '192.0.2.10',
  COREOS_HETZNER_PUBLIC_IPV6: '2a01:4f8:c17:1234::1',
  COREOS_HETZNER_REGION: 'eu-central',
  COREOS_HETZNER_PRIVATE_IPV4_0: '10.0.0.2',
  COREOS_HETZNER_PRIVATE_IPV4_1: '10.128.0.2',
  COREOS_IPV4_PUBLIC: '192.0.2.10',
  COREOS_IPV6_PUBLIC: '2a01:4f8:c17:1234::1',
  COREOS_IPV4_PRIVATE: '10.0.0.2',
  COREOS_HOSTNAME: 'my-server',
};

const HZ_UNIT = [
  '# Written by oem-agent from the Hetzner Cloud metadata.',
  '[Match]',
  'Name=eth0',
  'MACAddress=96:00:01:02:03:04',
  '',
  '[Network]',
  'DHCP=ipv4',
  'DNS=2a01:4ff:ff00::add:2',
  'DNS=2a01:4ff:ff00::add:1',
  '',
  '[Address]',
  'Address=2a01:4f8:c17:1234::1/64',
  '',
  '[Route]',
  'Destination=::/0',
  'Gateway=fe80::1',
  '',
].join('\n');

describe('hetzner', () => {
  it('reads the YAML metadata, private networks, hostname, keys, network config and userdata', async () => {
    mock.reset(hzRoutes());
    const md = await hetzner.metadata(env());
    expect(md.attributes).toEqual(HZ_ATTRS);
    expect(md.hostname).toBe('my-server');
    expect(md.sshKeys).toEqual([KEY.a, KEY.b]);
    expect(md.networkUnits).toEqual([{ name: '10-oem-0-eth0.network', content: HZ_UNIT }]);
    expect(mock.seen.map((s) => s.path)).toEqual([HZ, `${HZ}/private-networks`, `${HZ}/hostname`, `${HZ}/public-keys`, `${HZ}/network-config`]);
    expect((await hetzner.userdata(env()))?.toString()).toBe(HZ_USERDATA);
    expect(logs).toEqual([]);
  });

  it.each([
    ['no metadata document', { [HZ]: { status: 404 } }, ['COREOS_HETZNER_AVAILABILITY_ZONE', 'COREOS_HETZNER_HOSTNAME', 'COREOS_HETZNER_INSTANCE_ID', 'COREOS_HETZNER_PUBLIC_IPV4', 'COREOS_HETZNER_PUBLIC_IPV6', 'COREOS_HETZNER_REGION', 'COREOS_IPV4_PUBLIC', 'COREOS_IPV6_PUBLIC']],
    ['no private networks', { [`${HZ}/private-networks`]: { status: 404 } }, ['COREOS_HETZNER_PRIVATE_IPV4_0', 'COREOS_HETZNER_PRIVATE_IPV4_1', 'COREOS_IPV4_PRIVATE']],
    ['an empty private network list', { [`${HZ}/private-networks`]: { body: '[]' } }, ['COREOS_HETZNER_PRIVATE_IPV4_0', 'COREOS_HETZNER_PRIVATE_IPV4_1', 'COREOS_IPV4_PRIVATE']],
    ['no public-ipv4 field', { [HZ]: { body: hzMetadata({ 'public-ipv4': '' }) } }, ['COREOS_HETZNER_PUBLIC_IPV4', 'COREOS_IPV4_PUBLIC']],
    ['no region and zone fields', { [HZ]: { body: hzMetadata({ region: '', 'availability-zone': '' }) } }, ['COREOS_HETZNER_REGION', 'COREOS_HETZNER_AVAILABILITY_ZONE']],
    ['no network-config in the metadata', { [HZ]: { body: hzMetadata({ 'network-config': '' }) } }, ['COREOS_HETZNER_PUBLIC_IPV6', 'COREOS_IPV6_PUBLIC']],
    ['no instance-id field', { [HZ]: { body: hzMetadata({ 'instance-id': '' }) } }, ['COREOS_HETZNER_INSTANCE_ID']],
  ] as [string, Record<string, Route>, string[]][])('%s: those values are absent, the rest intact', async (_what, over, gone) => {
    mock.reset(hzRoutes(over));
    const md = await hetzner.metadata(env());
    expect(md.attributes).toEqual(without(HZ_ATTRS, ...gone));
    expect(md.hostname).toBe('my-server');
    expect(md.sshKeys).toEqual([KEY.a, KEY.b]);
    expect(md.networkUnits).toHaveLength(1);
  });

  it('no hostname endpoint: the metadata hostname; no keys, network config or userdata: none', async () => {
    mock.reset(hzRoutes({ [`${HZ}/hostname`]: { status: 404 }, [HZ]: { body: hzMetadata({ hostname: 'From-Doc' }) } }));
    let md = await hetzner.metadata(env());
    expect(md.hostname).toBe('from-doc');
    expect(md.attributes.COREOS_HOSTNAME).toBe('from-doc');
    mock.reset(hzRoutes({ [`${HZ}/hostname`]: { body: '' }, [HZ]: { body: hzMetadata({ hostname: '' }) } }));
    md = await hetzner.metadata(env());
    expect(md.hostname).toBeUndefined();
    expect(md.attributes).toEqual(without(HZ_ATTRS, 'COREOS_HOSTNAME', 'COREOS_HETZNER_HOSTNAME'));
    mock.reset(hzRoutes({ [`${HZ}/public-keys`]: { status: 404 }, [`${HZ}/network-config`]: { status: 404 }, '/hetzner/v1/userdata': { status: 404 } }));
    md = await hetzner.metadata(env());
    expect(md.sshKeys).toEqual([]);
    expect(md.networkUnits).toEqual([]);
    expect(md.attributes).toEqual(HZ_ATTRS);
    expect(await hetzner.userdata(env())).toBeNull();
    mock.reset(hzRoutes({ [`${HZ}/public-keys`]: { body: '[]' }, '/hetzner/v1/userdata': { body: '' } }));
    expect((await hetzner.metadata(env())).sshKeys).toEqual([]);
    expect(await hetzner.userdata(env())).toBeNull();
  });

  it('network config: static IPv4 with a netmask, DHCP for both families, other types and interfaces skipped', async () => {
    const config = `version: 1
config:
  - type: physical
    mac_address: 96:00:00:00:00:0a
    subnets:
      - type: static
        address: 192.0.2.10
        netmask: 255.255.255.0
        gateway: 192.0.2.1
        dns_nameservers: [185.12.64.1, 185.12.64.2]
      - type: dhcp6
  - type: physical
    name: eth1
    subnets:
      - type: dhcp
      - type: dhcp
        ipv6: true
  - type: nameserver
    address: [185.12.64.1]
  - type: physical
    name: eth2
    subnets: []
`;
    mock.reset(hzRoutes({ [`${HZ}/network-config`]: { body: config } }));
    const md = await hetzner.metadata(env());
    expect(md.networkUnits.map((u) => u.name)).toEqual(['10-oem-0-96_00_00_00_00_0a.network', '10-oem-1-eth1.network']);
    expect(md.networkUnits[0]!.content).toBe(
      [
        '# Written by oem-agent from the Hetzner Cloud metadata.',
        '[Match]',
        'MACAddress=96:00:00:00:00:0a',
        '',
        '[Network]',
        'DHCP=ipv6',
        'DNS=185.12.64.1',
        'DNS=185.12.64.2',
        '',
        '[Address]',
        'Address=192.0.2.10/24',
        '',
        '[Route]',
        'Destination=0.0.0.0/0',
        'Gateway=192.0.2.1',
        '',
      ].join('\n'),
    );
    expect(md.networkUnits[1]!.content).toBe('# Written by oem-agent from the Hetzner Cloud metadata.\n[Match]\nName=eth1\n\n[Network]\nDHCP=yes\n');
    logged(/^hetzner: ignoring network-config entry 2 of type "nameserver": only physical interfaces are configured$/);
    logged(/^hetzner: no network unit for network-config interface 3: it has neither DHCP nor an address$/);
  });

  it('retries a 500 and uses what follows', async () => {
    mock.reset(hzRoutes({ [HZ]: [{ status: 500 }, { body: hzMetadata() }], [`${HZ}/network-config`]: [{ status: 502 }, { status: 503 }, { body: HZ_NETWORK_CONFIG }] }));
    const md = await hetzner.metadata(env());
    expect(md.attributes).toEqual(HZ_ATTRS);
    expect(md.networkUnits).toHaveLength(1);
    expect(mock.hits(HZ)).toBe(2);
    expect(mock.hits(`${HZ}/network-config`)).toBe(3);
    logged(/^GET http:\/\/127\.0\.0\.1:\d+\/hetzner\/v1\/metadata failed \(attempt 1\/3\): HTTP 500/);
  });

  it('a dead service: a clear error naming the URL after the tries', async () => {
    const dead = await deadUrl();
    await expect(hetzner.metadata(env({ metadataUrl: dead }))).rejects.toThrow(`GET ${dead}/hetzner/v1/metadata failed after 3 attempts: fetch failed: ECONNREFUSED`);
    await expect(hetzner.userdata(env({ metadataUrl: dead }))).rejects.toThrow(`GET ${dead}/hetzner/v1/userdata failed after 3 attempts: fetch failed: ECONNREFUSED`);
  });

  it('hostile values are dropped with a log line: newlines, shell, bad addresses, unit injection, garbage keys', async () => {
    const config = `version: 1
config:
  - type: physical
    name: "../../etc/x"
    mac_address: "96:00:00:00:00:01\\n[Network]"
    subnets: [{ type: dhcp }]
  - type: physical
    name: "eth0\\nDNS=6.6.6.6"
    mac_address: 96:00:00:00:00:02
    subnets:
      - type: static
        address: "2a01:4f8::1/64\\nDNS=6.6.6.6"
      - type: static
        address: 192.0.2.10/24
        gateway: "192.0.2.1\\n[Route]"
        dns_nameservers: ["1.1.1.1; reboot", 9.9.9.9]
      - type: static
        address: 192.0.2.11
        netmask: 255.0.255.0
      - type: static
        address: 2a01:4f8::2/129
      - type: manual
`;
    mock.reset(
      hzRoutes({
        [HZ]: {
          body: hzMetadata({
            hostname: '"evil\\nhost"',
            region: "'$(reboot)'",
            'availability-zone': `"${HUGE}"`,
            'instance-id': '"42; reboot"',
            'public-ipv4': '999.1.2.3',
            'network-config': '{ config: [{ type: physical, subnets: [{ type: static, ipv6: true, address: 192.0.2.1/24 }] }] }',
          }),
        },
        [`${HZ}/private-networks`]: { body: '- ip: 10.0.0.2\n- ip: "10.0.0.3\\nX=1"\n- just a string\n- ip: 10.0.0.4' },
        [`${HZ}/hostname`]: { body: '$(reboot)' },
        [`${HZ}/public-keys`]: json(['garbage', KEY.c, 42, `${KEY.a}\ncommand="reboot" ssh-rsa AAAA`]),
        [`${HZ}/network-config`]: { body: config },
      }),
    );
    const md = await hetzner.metadata(env());
    expect(md.attributes).toEqual({ COREOS_HETZNER_PRIVATE_IPV4_0: '10.0.0.2', COREOS_HETZNER_PRIVATE_IPV4_3: '10.0.0.4', COREOS_IPV4_PRIVATE: '10.0.0.2' });
    expect(md.hostname).toBeUndefined();
    expect(md.sshKeys).toEqual([KEY.c, KEY.a]);
    expect(md.networkUnits).toEqual([
      {
        name: '10-oem-0-96_00_00_00_00_02.network',
        content: '# Written by oem-agent from the Hetzner Cloud metadata.\n[Match]\nMACAddress=96:00:00:00:00:02\n\n[Network]\nDNS=9.9.9.9\n\n[Address]\nAddress=192.0.2.10/24\n',
      },
    ]);
    for (const re of [
      /^ignoring hetzner: the metadata hostname "evil\\nhost": it contains control characters/,
      /^ignoring hetzner: the hostname "\$\(reboot\)": it has the label/,
      /^hetzner: ignoring the region "\$\(reboot\)": not a valid value$/,
      /^hetzner: ignoring the availability-zone "a{60,}…"/,
      /^hetzner: ignoring the instance-id "42; reboot"/,
      /^ignoring hetzner: the public-ipv4 "999\.1\.2\.3": not an IPv4 address$/,
      /^hetzner: ignoring the public IPv6 address 192\.0\.2\.1: it is an IPv4 address$/,
      /^ignoring hetzner: the private network 1 ip "10\.0\.0\.3\\nX=1"/,
      /^hetzner: ignoring private network 2: not a mapping$/,
      /^hetzner: network-config interface 0: ignoring the name "\.\.\/\.\.\/etc\/x": not an interface name$/,
      /^ignoring hetzner: network-config interface 0: the MAC address "96:00:00:00:00:01\\n\[Network\]": not a MAC address$/,
      /^hetzner: network-config interface 0: no network unit: it has neither a valid name nor a valid MAC address$/,
      /^ignoring hetzner: network-config interface 1 subnet 0: the address "2a01:4f8::1\/64\\nDNS=6\.6\.6\.6": not an IP address$/,
      /^ignoring hetzner: network-config interface 1 subnet 1: the gateway "192\.0\.2\.1\\n\[Route\]"/,
      /^ignoring hetzner: network-config interface 1 subnet 1: the nameserver "1\.1\.1\.1; reboot"/,
      /^ignoring hetzner: network-config interface 1 subnet 2: the address 192\.0\.2\.11: the netmask "255\.0\.255\.0" is not an IPv4 netmask$/,
      /^ignoring hetzner: network-config interface 1 subnet 3: the address "2a01:4f8::2\/129": the prefix length is more than 128$/,
      /^hetzner: network-config interface 1 subnet 4: ignoring the subnet type "manual"/,
      /^hetzner: network-config interface 1: ignoring the name "eth0\\nDNS=6\.6\.6\.6": not an interface name$/,
      /^ignoring an invalid SSH key: .*"garbage"/,
      /^ignoring an SSH key from the Hetzner metadata: not a string \("42"\)$/,
    ]) {
      logged(re);
    }
  });

  it('documents: YAML is data (no aliases bombs, no code); not YAML, the wrong shape or too large', async () => {
    // Custom tags are not run or constructed: the value is dropped as not a string.
    mock.reset(hzRoutes({ [HZ]: { body: hzMetadata({ hostname: '!!js/function "function () { reboot() }"', region: '!!binary aGVsbG8=' }) } }));
    const md = await hetzner.metadata(env());
    expect(md.attributes.COREOS_HETZNER_HOSTNAME).toBeUndefined();
    expect(md.attributes.COREOS_HETZNER_REGION).toBeUndefined();
    // A billion laughs.
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]', ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(',')}]`)].join('\n');
    mock.reset(hzRoutes({ [HZ]: { body: bomb } }));
    await expect(hetzner.metadata(env())).rejects.toThrow(/^hetzner: http:\/\/127\.0\.0\.1:\d+\/hetzner\/v1\/metadata cannot be read: .*alias/i);
    mock.reset(hzRoutes({ [HZ]: { body: 'hostname: [unclosed' } }));
    await expect(hetzner.metadata(env())).rejects.toThrow(/^hetzner: http:\/\/127\.0\.0\.1:\d+\/hetzner\/v1\/metadata is not valid YAML: /);
    mock.reset(hzRoutes({ [HZ]: { body: 'a: 1\na: 2\n' } }));
    await expect(hetzner.metadata(env())).rejects.toThrow(/is not valid YAML: .*[Mm]ap keys must be unique/);
    mock.reset(hzRoutes({ [`${HZ}/private-networks`]: { body: 'ip: 10.0.0.2' } }));
    await expect(hetzner.metadata(env())).rejects.toThrow(/\/hetzner\/v1\/metadata\/private-networks is not a list$/);
    mock.reset(hzRoutes({ [HZ]: { body: '- a\n- b' } }));
    await expect(hetzner.metadata(env())).rejects.toThrow(/\/hetzner\/v1\/metadata is not a mapping$/);
    mock.reset(hzRoutes({ [`${HZ}/network-config`]: { body: `# ${'x'.repeat(2 * 1024 * 1024)}\n${HZ_NETWORK_CONFIG}` } }));
    expect((await hetzner.metadata(env())).networkUnits).toEqual([]);
    logged(/^hetzner: http:\/\/127\.0\.0\.1:\d+\/hetzner\/v1\/metadata\/network-config: \d+ bytes, more than the 1048576 allowed; ignored$/);
  });
});

// ---------------------------------------------------------------------------------------------
// End to end: the agent's subcommands on temporary roots

interface E2e {
  id: string;
  setup: () => void;
  coreos: string[];
  afterburn: string[];
  hostname?: string;
  keys: string[];
}

const E2E: E2e[] = [
  {
    id: 'akamai',
    setup: () => akSetup(),
    coreos: Object.entries(AK_ATTRS).map(([k, v]) => `${k}=${v}`),
    afterburn: Object.entries(AK_ATTRS)
      .filter(([k]) => k.startsWith('COREOS_AKAMAI_'))
      .map(([k, v]) => `${k.replace('COREOS_', 'AFTERBURN_')}=${v}`),
    keys: [KEY.b, KEY.c, KEY.a],
  },
  {
    id: 'vultr',
    setup: () => mock.reset(textRoutes(TEXT_PLATFORMS[0]!)),
    coreos: ['COREOS_HOSTNAME=vultr-guest', 'COREOS_VULTR_HOSTNAME=vultr-guest', 'COREOS_VULTR_INSTANCE_ID=a747bfz6385e', 'COREOS_VULTR_REGION_CODE=EWR'],
    afterburn: ['AFTERBURN_VULTR_HOSTNAME=vultr-guest', 'AFTERBURN_VULTR_INSTANCE_ID=a747bfz6385e', 'AFTERBURN_VULTR_REGION_CODE=EWR'],
    hostname: 'vultr-guest',
    keys: [KEY.a, KEY.b],
  },
  {
    id: 'upcloud',
    setup: () => mock.reset(textRoutes(TEXT_PLATFORMS[1]!)),
    coreos: Object.entries(TEXT_PLATFORMS[1]!.attrs).map(([k, v]) => `${k}=${v}`),
    afterburn: ['AFTERBURN_UPCLOUD_HOSTNAME=metadata.example.com', 'AFTERBURN_UPCLOUD_INSTANCE_ID=00bf9504-a4cb-4839-88ff-124a2c95e169', 'AFTERBURN_UPCLOUD_REGION=de-fra1'],
    hostname: 'metadata.example.com',
    keys: [KEY.a, KEY.b],
  },
  {
    id: 'hetzner',
    setup: () => mock.reset(hzRoutes()),
    coreos: Object.entries(HZ_ATTRS).map(([k, v]) => `${k}=${v}`),
    afterburn: [
      'AFTERBURN_HETZNER_AVAILABILITY_ZONE=fsn1-dc14',
      'AFTERBURN_HETZNER_HOSTNAME=my-server',
      'AFTERBURN_HETZNER_INSTANCE_ID=12345678',
      'AFTERBURN_HETZNER_PRIVATE_IPV4_0=10.0.0.2',
      'AFTERBURN_HETZNER_PRIVATE_IPV4_1=10.128.0.2',
      'AFTERBURN_HETZNER_PUBLIC_IPV4=192.0.2.10',
      'AFTERBURN_HETZNER_PUBLIC_IPV6=2a01:4f8:c17:1234::1',
      'AFTERBURN_HETZNER_REGION=eu-central',
    ],
    hostname: 'my-server',
    keys: [KEY.a, KEY.b],
  },
];

const envFile = (lines: string[]) => [...lines].sort().join('\n') + '\n';

describe('oem-agent subcommands on a temporary root', () => {
  it('the descriptors say what the modules do', () => {
    expect(agentPlatform('akamai')).toMatchObject({ name: 'AKAMAI', afterburn: 'AKAMAI', does: ['attributes', 'ssh-keys', 'userdata'] });
    expect(agentPlatform('hetzner')).toMatchObject({ name: 'HETZNER', afterburn: 'HETZNER', does: ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata'] });
    for (const id of ['vultr', 'upcloud']) expect(agentPlatform(id)).toMatchObject({ name: id.toUpperCase(), afterburn: id.toUpperCase(), does: ['attributes', 'hostname', 'ssh-keys', 'userdata'] });
  });

  it.each(E2E)('$id: metadata writes /run/coreos/metadata; --format afterburn writes /run/metadata/afterburn', async (p) => {
    const root = await makeRoot();
    p.setup();
    const r = await agent(agentArgs('metadata', root, p.id, mock.base));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(await readFile(join(root, 'run/coreos/metadata'), 'utf8')).toBe(envFile(p.coreos));
    expect(r.out).toMatch(new RegExp(`oem-agent: wrote /run/coreos/metadata \\(0644 root:root, ${p.coreos.length} attributes\\)`));
    const a = await agent(agentArgs('metadata', root, p.id, mock.base, '--format', 'afterburn'));
    expect(a.code).toBe(0);
    expect(await readFile(join(root, 'run/metadata/afterburn'), 'utf8')).toBe(envFile(p.afterburn));
    // The hostname, where the platform names one.
    const h = await agent(agentArgs('hostname', root, p.id, mock.base));
    expect(h.code).toBe(0);
    if (p.hostname === undefined) {
      expect(h.out).toMatch(/no hostname in the metadata; \/etc\/hostname is left as it is/);
      await expect(stat(join(root, 'etc/hostname'))).rejects.toThrow();
    } else {
      expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe(`${p.hostname}\n`);
    }
  });

  it.runIf(process.getuid?.() === 0).each(E2E)('$id: ssh-keys writes the coreos-metadata key set for core [root]', async (p) => {
    const root = await makeRoot();
    p.setup();
    const r = await agent(agentArgs('ssh-keys', root, p.id, mock.base));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(await readFile(join(root, 'home/core/.ssh/authorized_keys.d/coreos-metadata'), 'utf8')).toBe(p.keys.map((k) => `${k}\n`).join(''));
    const st = await stat(join(root, 'home/core/.ssh/authorized_keys'));
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([500, 500, 0o600]);
  });

  it('hetzner: network writes the networkd unit; the others have none', async () => {
    const root = await makeRoot();
    mock.reset(hzRoutes());
    const r = await agent(agentArgs('network', root, 'hetzner', mock.base));
    expect(r.code).toBe(0);
    expect(await readdir(join(root, 'etc/systemd/network'))).toEqual(['10-oem-0-eth0.network']);
    expect(await readFile(join(root, 'etc/systemd/network/10-oem-0-eth0.network'), 'utf8')).toBe(HZ_UNIT);
    mock.reset(textRoutes(TEXT_PLATFORMS[0]!));
    const v = await agent(agentArgs('network', root, 'vultr', mock.base));
    expect(v.code).toBe(0);
    expect(v.out).toMatch(/vultr: no network configuration in the metadata \(DHCP configures the network\)/);
  });

  it('userdata: akamai base64-decoded, the others as they are, saved as cloud-configs', async () => {
    for (const p of E2E) {
      const root = await makeRoot();
      p.setup();
      const r = await agent(agentArgs('userdata', root, p.id, mock.base));
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(/the userdata is a cloud-config, but \/usr\/bin\/coreos-cloudinit .*is not there; saved it/);
      const want = { akamai: AK_USERDATA, vultr: TEXT_USERDATA, upcloud: TEXT_USERDATA, hetzner: HZ_USERDATA }[p.id];
      expect(await readFile(join(root, 'var/lib/oem-agent/userdata.raw'), 'utf8')).toBe(want);
    }
  });

  it('hostile values never reach the files; a dead service fails with the URL and exit 1', async () => {
    const root = await makeRoot();
    akSetup({ '/v1/instance': json(akInstance({ label: "x'$(reboot)'", region: 'a\nAKAMAI_X=1' })) });
    const r = await agent(agentArgs('metadata', root, 'akamai', mock.base));
    expect(r.code).toBe(0);
    const file = await readFile(join(root, 'run/coreos/metadata'), 'utf8');
    expect(file).not.toMatch(/reboot|AKAMAI_X|INSTANCE_LABEL|INSTANCE_REGION/);
    expect(r.out).toMatch(/oem-agent: akamai: ignoring the instance label "x'\$\(reboot\)'"/);
    const dead = await deadUrl();
    const d = await agent(['metadata', '--root', root, '--provider', 'hetzner', '--metadata-url', dead, '--http-tries', '2', '--http-backoff-ms', '5']);
    expect(d.code).toBe(1);
    expect(d.err).toBe(`oem-agent: error: GET ${dead}/hetzner/v1/metadata failed after 2 attempts: fetch failed: ECONNREFUSED\n`);
  });
});
