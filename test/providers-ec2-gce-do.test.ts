/**
 * The ec2, gce and digitalocean providers against mock metadata services on 127.0.0.1 (ephemeral
 * ports) that answer in the platforms' documented formats; the safety checks of values.ts; and the
 * agent's subcommands (oem/cli.ts run()) end to end on temporary roots. Every env and every CLI call
 * points metadataUrl at the local mock: nothing here ever talks to 169.254.169.254.
 *
 * Files are written owned by root (and by the core user for SSH keys): CI runs as root.
 */
import { lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { agent, agentArgs, deadUrl, edKey, keyBody, type Reply, type Route, type Seen, useMetadataMock } from './helpers/metadata-mock.js';
import { applyUserdata, classifyUserdata, writeContext, writeHostname, writeNetworkUnits } from '../oem/providers/actions.js';
import { provider as digitalocean } from '../oem/providers/digitalocean.js';
import { provider as ec2 } from '../oem/providers/ec2.js';
import { parseGceSshKeys, provider as gce } from '../oem/providers/gce.js';
import { AGENT_PLATFORMS, agentPlatform } from '../src/shared/platforms.js';
import { defaultEnv, detectProvider, detectProviderId, oemIdFromCmdline, PROVIDERS } from '../oem/providers/index.js';
import {
  cleanHostname,
  cleanSshKeys,
  envFileContent,
  hostnameProblem,
  netmaskToPrefix,
  networkUnitName,
  staticHostname,
  validNetworkUnitName,
} from '../oem/providers/values.js';

// ---------------------------------------------------------------------------------------------
// Keys and the mock service

const body = keyBody;

const KEY = { a: edKey('alice@example'), b: edKey('bob@example'), c: edKey('carol@example'), d: edKey('dave@example'), e: edKey('eve@example') };

const { mock, work, logs, env, makeRoot } = useMetadataMock('oem-providers-test-');
const cli = agent;

/** The CLI with the local mock and fast retries. */
function cliArgs(cmd: string, root: string, provider: string, ...more: string[]): string[] {
  return [cmd, '--root', root, '--provider', provider, '--metadata-url', mock.base, '--http-tries', '3', '--http-timeout-ms', '2000', '--http-backoff-ms', '5', ...more];
}

const modeOf = async (p: string) => (await stat(p)).mode & 0o7777;

// ---------------------------------------------------------------------------------------------
// EC2

const EC2 = '/2009-04-04/meta-data';
/** What the service grew after 2009-04-04, read under Afterburn's version. */
const EC2_NEW = '/2021-01-03';
const TOKEN = 'AQAEAFakeTokenForTests==';

function ec2Routes(over: Record<string, Route> = {}): Record<string, Route> {
  return {
    'PUT /latest/api/token': (req) =>
      req.headers['x-aws-ec2-metadata-token-ttl-seconds'] === '21600' ? { body: TOKEN } : { status: 400, body: 'missing ttl' },
    [`${EC2}/local-ipv4`]: { body: '172.31.10.20' },
    [`${EC2}/public-ipv4`]: { body: '54.210.1.2' },
    [`${EC2}/local-hostname`]: { body: 'ip-172-31-10-20.ec2.internal' },
    [`${EC2}/hostname`]: { body: 'ip-172-31-10-20.ec2.internal' },
    [`${EC2}/public-hostname`]: { body: 'ec2-54-210-1-2.compute-1.amazonaws.com' },
    [`${EC2}/instance-id`]: { body: 'i-0abcdef1234567890' },
    [`${EC2}/instance-type`]: { body: 't3.micro' },
    [`${EC2}/placement/availability-zone`]: { body: 'us-east-1a' },
    [`${EC2_NEW}/meta-data/placement/availability-zone-id`]: { body: 'use1-az4' },
    [`${EC2_NEW}/meta-data/ipv6`]: { body: '2600:1f18:4a3:6902:8e7c:1a2b:3c4d:5e6f' },
    [`${EC2_NEW}/dynamic/instance-identity/document`]: {
      body: JSON.stringify({ accountId: '123456789012', availabilityZone: 'us-east-1a', instanceId: 'i-0abcdef1234567890', region: 'us-east-1', version: '2017-09-30' }, null, 2),
    },
    [`${EC2}/public-keys/`]: { body: '0=alice\n1=bob' },
    [`${EC2}/public-keys/0/openssh-key`]: { body: `${KEY.a}\n` },
    [`${EC2}/public-keys/1/openssh-key`]: { body: KEY.b },
    '/2009-04-04/user-data': { body: '#cloud-config\nhostname: from-cloud-config\n' },
    ...over,
  };
}

/** IMDSv2 only: a GET without the token is refused, as on an instance with HttpTokens=required. */
function requireToken(req: Seen): Reply | undefined {
  if (req.method === 'GET' && req.headers['x-aws-ec2-metadata-token'] !== TOKEN) return { status: 401, body: 'Unauthorized' };
  return undefined;
}

describe('ec2', () => {
  it('reads the metadata with an IMDSv2 token on every request', async () => {
    mock.reset(ec2Routes());
    mock.guard = requireToken;
    const md = await ec2.metadata(env());
    expect(md.attributes).toEqual({
      COREOS_IPV4_PRIVATE: '172.31.10.20',
      COREOS_IPV4_PUBLIC: '54.210.1.2',
      COREOS_HOSTNAME: 'ip-172-31-10-20.ec2.internal',
      COREOS_EC2_IPV4_LOCAL: '172.31.10.20',
      COREOS_EC2_IPV4_PUBLIC: '54.210.1.2',
      COREOS_EC2_HOSTNAME: 'ip-172-31-10-20.ec2.internal',
      COREOS_EC2_PUBLIC_HOSTNAME: 'ec2-54-210-1-2.compute-1.amazonaws.com',
      COREOS_EC2_INSTANCE_ID: 'i-0abcdef1234567890',
      COREOS_EC2_INSTANCE_TYPE: 't3.micro',
      COREOS_EC2_AVAILABILITY_ZONE: 'us-east-1a',
      COREOS_EC2_AVAILABILITY_ZONE_ID: 'use1-az4',
      COREOS_EC2_IPV6: '2600:1f18:4a3:6902:8e7c:1a2b:3c4d:5e6f',
      COREOS_EC2_REGION: 'us-east-1',
    });
    expect(md.hostname).toBe('ip-172-31-10-20.ec2.internal');
    expect(md.sshKeys).toEqual([KEY.a, KEY.b]);
    expect(md.networkUnits).toEqual([]);
    const gets = mock.seen.filter((s) => s.method === 'GET');
    expect(gets.length).toBeGreaterThan(5);
    expect(gets.every((s) => s.headers['x-aws-ec2-metadata-token'] === TOKEN)).toBe(true);
    expect(mock.seen[0]).toMatchObject({ method: 'PUT', path: '/latest/api/token' });
    expect(mock.seen.every((s) => !s.path.includes('..'))).toBe(true);
    expect((await ec2.userdata(env()))?.toString()).toBe('#cloud-config\nhostname: from-cloud-config\n');
  });

  it.each([403, 404, 405])('falls back to IMDSv1 when the token PUT gives %i', async (status) => {
    mock.reset(ec2Routes({ 'PUT /latest/api/token': { status, body: 'no' } }));
    const md = await ec2.metadata(env());
    expect(md.attributes.COREOS_EC2_INSTANCE_ID).toBe('i-0abcdef1234567890');
    expect(mock.seen.filter((s) => s.method === 'GET').every((s) => s.headers['x-aws-ec2-metadata-token'] === undefined)).toBe(true);
    expect(logs).toContain(`ec2: no IMDSv2 token (HTTP ${status}); using IMDSv1`);
  });

  it('leaves out what the service does not have (404): no public address, no keys, no userdata', async () => {
    mock.reset(
      ec2Routes({
        [`${EC2}/public-ipv4`]: { status: 404 },
        [`${EC2}/public-hostname`]: { status: 404 },
        [`${EC2}/public-keys/`]: { status: 404 },
        '/2009-04-04/user-data': { status: 404 },
        [`${EC2_NEW}/meta-data/ipv6`]: { status: 404 },
        [`${EC2_NEW}/meta-data/placement/availability-zone-id`]: { status: 404 },
        [`${EC2_NEW}/dynamic/instance-identity/document`]: { status: 404 },
        [`${EC2}/hostname`]: { status: 404 },
      }),
    );
    const md = await ec2.metadata(env());
    expect(md.attributes.COREOS_IPV4_PUBLIC).toBeUndefined();
    expect(md.attributes.COREOS_EC2_PUBLIC_HOSTNAME).toBeUndefined();
    for (const k of ['COREOS_EC2_IPV6', 'COREOS_EC2_AVAILABILITY_ZONE_ID', 'COREOS_EC2_REGION', 'COREOS_EC2_HOSTNAME']) expect(md.attributes[k], k).toBeUndefined();
    // The system's name still comes from local-hostname.
    expect(md.hostname).toBe('ip-172-31-10-20.ec2.internal');
    expect(md.attributes.COREOS_IPV4_PRIVATE).toBe('172.31.10.20');
    expect(md.sshKeys).toEqual([]);
    expect(await ec2.userdata(env())).toBeNull();
    // An identity document without a region gives none either.
    mock.reset(ec2Routes({ [`${EC2_NEW}/dynamic/instance-identity/document`]: { body: '{"instanceId": "i-1"}' } }));
    expect((await ec2.metadata(env())).attributes.COREOS_EC2_REGION).toBeUndefined();
  });

  it('retries a 500 and uses the 200 that follows', async () => {
    mock.reset(ec2Routes({ [`${EC2}/local-ipv4`]: [{ status: 500, body: 'oops' }, { body: '172.31.10.20' }] }));
    const md = await ec2.metadata(env());
    expect(md.attributes.COREOS_IPV4_PRIVATE).toBe('172.31.10.20');
    expect(mock.hits(`${EC2}/local-ipv4`)).toBe(2);
    expect(logs.some((l) => /local-ipv4 failed \(attempt 1\/3\): HTTP 500/.test(l))).toBe(true);
  });

  it('drops hostile values: a newline in the hostname, key names that are paths, broken keys, bad addresses', async () => {
    mock.reset(
      ec2Routes({
        [`${EC2}/local-hostname`]: { body: 'evil\nhost' },
        [`${EC2}/local-ipv4`]: { body: '172.31.10.20\nCOREOS_X=1' },
        [`${EC2}/public-keys/`]: { body: '0=../../../etc/shadow\n../1=evil\n2=ok\n3=broken' },
        [`${EC2}/public-keys/0/openssh-key`]: { body: KEY.a },
        [`${EC2}/public-keys/2/openssh-key`]: { body: `${KEY.c}\ncommand="x" ssh-rsa AAAA broken` },
        [`${EC2}/public-keys/3/openssh-key`]: { body: 'ssh-ed25519 bm90IGEga2V5 not-a-key' },
      }),
    );
    const md = await ec2.metadata(env());
    expect(md.hostname).toBeUndefined();
    expect(md.attributes.COREOS_HOSTNAME).toBeUndefined();
    expect(md.attributes.COREOS_IPV4_PRIVATE).toBeUndefined();
    expect(md.sshKeys).toEqual([KEY.a, KEY.c]);
    expect(mock.seen.map((s) => s.path).filter((p) => p.includes('public-keys/'))).toEqual([
      `${EC2}/public-keys/`,
      `${EC2}/public-keys/0/openssh-key`,
      `${EC2}/public-keys/2/openssh-key`,
      `${EC2}/public-keys/3/openssh-key`,
    ]);
    expect(logs.some((l) => l.startsWith('ignoring ec2: the hostname "evil\\nhost"'))).toBe(true);
    expect(logs.some((l) => l.includes('"../1=evil"'))).toBe(true);
    expect(logs.filter((l) => l.startsWith('ignoring an invalid SSH key'))).toHaveLength(2);
  });

  it('drops hostile values of the newer attributes: IPv6, zone id, region, the hostname attribute', async () => {
    mock.reset(
      ec2Routes({
        [`${EC2_NEW}/meta-data/ipv6`]: { body: '2600:1f18::1\nCOREOS_X=1' },
        [`${EC2_NEW}/meta-data/placement/availability-zone-id`]: { body: 'use1-az4\0' },
        [`${EC2_NEW}/dynamic/instance-identity/document`]: { body: JSON.stringify({ region: 'us-east-1\nCOREOS_IPV4_PUBLIC=6.6.6.6' }) },
        [`${EC2}/hostname`]: { body: '../../etc/passwd' },
      }),
    );
    const md = await ec2.metadata(env());
    expect(md.attributes.COREOS_EC2_IPV6).toBeUndefined();
    expect(md.attributes.COREOS_EC2_REGION).toBeUndefined();
    expect(md.attributes.COREOS_EC2_HOSTNAME).toBeUndefined();
    expect(md.hostname).toBe('ip-172-31-10-20.ec2.internal');
    expect(logs.some((l) => l.startsWith('ignoring ec2: ipv6 "2600:1f18::1\\nCOREOS_X=1"'))).toBe(true);
    expect(logs.some((l) => l.startsWith('ec2: ignoring the region "us-east-1\\nCOREOS_IPV4_PUBLIC=6.6.6.6"'))).toBe(true);
    // A zone id with a NUL is kept as text here and refused when written (as for the other one-line values).
    const { content, dropped } = envFileContent(md.attributes, (l) => logs.push(l));
    expect(dropped).toEqual(['COREOS_EC2_AVAILABILITY_ZONE_ID']);
    expect(content).not.toContain('use1-az4');
    // A document that is not JSON, or a region that is not a string, is no region.
    for (const doc of ['<html>oops</html>', '{"region": 42}', '["us-east-1"]']) {
      mock.reset(ec2Routes({ [`${EC2_NEW}/dynamic/instance-identity/document`]: { body: doc } }));
      expect((await ec2.metadata(env())).attributes.COREOS_EC2_REGION, doc).toBeUndefined();
    }
    expect(logs.some((l) => l.startsWith('ec2: ignoring the instance identity document: not JSON'))).toBe(true);
  });

  it('a dead service is an error naming the URL after the configured tries', async () => {
    const e = env('/nonexistent-root', { metadataUrl: await deadUrl() });
    await expect(ec2.metadata(e)).rejects.toThrow(/^PUT http:\/\/127\.0\.0\.1:\d+\/latest\/api\/token failed after 3 attempts: fetch failed: ECONNREFUSED$/);
  });
});

// ---------------------------------------------------------------------------------------------
// GCE

const GCE = '/computeMetadata/v1';
const FLAVOR = { 'Metadata-Flavor': 'Google' };

function gceRoutes(over: Record<string, Route> = {}): Record<string, Route> {
  return {
    [`${GCE}/instance/network-interfaces/0/ip`]: { body: '10.128.0.7' },
    [`${GCE}/instance/network-interfaces/0/access-configs/0/external-ip`]: { body: '34.71.2.3' },
    [`${GCE}/instance/hostname`]: { body: 'flatcar-1.us-central1-a.c.my-project.internal' },
    [`${GCE}/instance/machine-type`]: { body: 'projects/123456789/machineTypes/e2-medium' },
    [`${GCE}/instance/attributes/ssh-keys`]: {
      body: [
        `core:${KEY.a}`,
        `alice:${body(KEY.b)} google-ssh {"userName":"alice@example.com","expireOn":"2001-01-01T00:00:00+0000"}`,
        `bob:${body(KEY.c)} google-ssh {"userName":"bob@example.com","expireOn":"2999-01-01T00:00:00+0000"}`,
        'no-user-prefix-here',
      ].join('\n'),
    },
    [`${GCE}/instance/attributes/sshKeys`]: { body: `legacy:${KEY.d}\n` },
    [`${GCE}/project/attributes/ssh-keys`]: { body: `proj:${KEY.e}` },
    [`${GCE}/project/attributes/user-data`]: { body: 'version: 1\n' },
    ...over,
  };
}

function gceGuard(req: Seen): Reply | undefined {
  if (req.headers['metadata-flavor'] !== 'Google') return { status: 403, body: 'Missing Metadata-Flavor:Google header.' };
  return undefined;
}

describe('gce', () => {
  beforeEach(() => {
    mock.always = FLAVOR;
  });

  it('reads addresses, hostname, machine type and keys (user prefix dropped, expired keys dropped)', async () => {
    mock.reset(gceRoutes());
    mock.guard = gceGuard;
    const md = await gce.metadata(env());
    expect(md.attributes).toEqual({
      COREOS_IPV4_PRIVATE: '10.128.0.7',
      COREOS_IPV4_PUBLIC: '34.71.2.3',
      COREOS_GCE_IP_LOCAL_0: '10.128.0.7',
      COREOS_GCE_IP_EXTERNAL_0: '34.71.2.3',
      COREOS_HOSTNAME: 'flatcar-1.us-central1-a.c.my-project.internal',
      COREOS_GCE_HOSTNAME: 'flatcar-1.us-central1-a.c.my-project.internal',
      // As the server gives it, as Afterburn writes it.
      COREOS_GCE_MACHINE_TYPE: 'projects/123456789/machineTypes/e2-medium',
    });
    expect(md.hostname).toBe('flatcar-1.us-central1-a.c.my-project.internal');
    // The instance has the legacy sshKeys: the project's keys are not used (Google's guest agent, Afterburn).
    expect(md.sshKeys.map(body)).toEqual([body(KEY.a), body(KEY.c), body(KEY.d)]);
    expect(md.sshKeys[0]).toBe(KEY.a);
    expect(logs).toContain('gce: the instance has the legacy sshKeys: project keys are not used');
    expect(mock.hits(`${GCE}/project/attributes/ssh-keys`)).toBe(0);
    expect(md.networkUnits).toEqual([]);
    expect(logs.some((l) => /expired key of user alice/.test(l))).toBe(true);
    expect(logs.some((l) => /without a user name: "no-user-prefix-here"/.test(l))).toBe(true);
    expect(mock.seen.every((s) => s.headers['metadata-flavor'] === 'Google')).toBe(true);
  });

  it('project keys (both attributes) are used unless block-project-ssh-keys=true', async () => {
    const noLegacy = { [`${GCE}/instance/attributes/sshKeys`]: { status: 404 }, [`${GCE}/project/attributes/sshKeys`]: { body: `old:${KEY.d}` } };
    mock.reset(gceRoutes(noLegacy));
    expect((await gce.metadata(env())).sshKeys.map(body)).toEqual([body(KEY.a), body(KEY.c), body(KEY.e), body(KEY.d)]);
    mock.reset(gceRoutes({ ...noLegacy, [`${GCE}/instance/attributes/block-project-ssh-keys`]: { body: 'TRUE' } }));
    const md = await gce.metadata(env());
    expect(md.sshKeys.map(body)).toEqual([body(KEY.a), body(KEY.c)]);
    expect(mock.hits(`${GCE}/project/attributes/ssh-keys`)).toBe(0);
    expect(logs).toContain('gce: block-project-ssh-keys is set: project keys are not used');
  });

  it('userdata: the instance attribute, else the project one, else none', async () => {
    mock.reset(gceRoutes({ [`${GCE}/instance/attributes/user-data`]: { body: '#cloud-config\n' } }));
    expect((await gce.userdata(env()))?.toString()).toBe('#cloud-config\n');
    mock.reset(gceRoutes());
    expect((await gce.userdata(env()))?.toString()).toBe('version: 1\n');
    mock.reset({});
    expect(await gce.userdata(env())).toBeNull();
  });

  it('absent values (404), and a 500 that recovers', async () => {
    mock.reset({
      [`${GCE}/instance/network-interfaces/0/ip`]: [{ status: 500 }, { status: 503 }, { body: '10.128.0.9' }],
      [`${GCE}/instance/hostname`]: { body: 'h' },
    });
    const md = await gce.metadata(env());
    expect(md.attributes).toEqual({ COREOS_IPV4_PRIVATE: '10.128.0.9', COREOS_GCE_IP_LOCAL_0: '10.128.0.9', COREOS_HOSTNAME: 'h', COREOS_GCE_HOSTNAME: 'h' });
    expect(md.sshKeys).toEqual([]);
    // A bare machine type name is taken too.
    mock.reset(gceRoutes({ [`${GCE}/instance/machine-type`]: { body: 'n2-standard-4\n' } }));
    expect((await gce.metadata(env())).attributes.COREOS_GCE_MACHINE_TYPE).toBe('n2-standard-4');
  });

  it('refuses a service that does not answer with Metadata-Flavor: Google', async () => {
    mock.always = {};
    mock.reset(gceRoutes());
    await expect(gce.metadata(env())).rejects.toThrow(/lacks the header Metadata-Flavor: Google; refusing it/);
  });

  it('hostile values: newline in the hostname, NUL and shell in addresses, bad key lines', async () => {
    mock.reset(
      gceRoutes({
        [`${GCE}/instance/hostname`]: { body: 'a.b\nc' },
        [`${GCE}/instance/network-interfaces/0/ip`]: { body: '10.0.0.1\0' },
        [`${GCE}/instance/network-interfaces/0/access-configs/0/external-ip`]: { body: '$(reboot)' },
        [`${GCE}/instance/attributes/ssh-keys`]: { body: `core:${KEY.a}\nx:ssh-rsa AAAAB3 bad\ny:../../etc/passwd` },
        [`${GCE}/instance/machine-type`]: { body: 'projects/1/machineTypes/e2-small\nCOREOS_IPV4_PUBLIC=6.6.6.6' },
      }),
    );
    const md = await gce.metadata(env());
    expect(md.hostname).toBeUndefined();
    expect(md.attributes.COREOS_IPV4_PRIVATE).toBeUndefined();
    expect(md.attributes.COREOS_IPV4_PUBLIC).toBeUndefined();
    expect(md.attributes.COREOS_GCE_MACHINE_TYPE).toBeUndefined();
    expect(md.attributes.COREOS_GCE_HOSTNAME).toBeUndefined();
    expect(logs.some((l) => l.startsWith('gce: ignoring the machine type "projects/1/machineTypes/e2-small\\nCOREOS_IPV4_PUBLIC=6.6.6.6"'))).toBe(true);
    expect(md.sshKeys.map(body)).toEqual([body(KEY.a), body(KEY.d)]);
  });

  it('parseGceSshKeys keeps keys of every user and honours expireOn', () => {
    const now = Date.parse('2020-06-01T00:00:00Z');
    const l: string[] = [];
    const k = parseGceSshKeys(
      [`core:${KEY.a}`, `u:${body(KEY.b)} google-ssh {"userName":"u","expireOn":"2020-05-31T23:59:59+0000"}`, `v:${body(KEY.c)} google-ssh {"expireOn":"2020-06-01T00:00:01+0000"}`].join('\r\n'),
      (x) => l.push(x),
      'test',
      now,
    );
    expect(k.map(body)).toEqual([body(KEY.a), body(KEY.c)]);
  });
});

// ---------------------------------------------------------------------------------------------
// DigitalOcean

function doDoc(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    droplet_id: 2756294,
    hostname: 'sample-droplet',
    vendor_data: '#cloud-config\ndisable_root: false\n',
    public_keys: [KEY.a, KEY.b],
    auth_key: 'abc',
    region: 'nyc3',
    interfaces: {
      private: [
        {
          ipv4: { ip_address: '10.132.255.113', netmask: '255.255.0.0', gateway: '10.132.0.1' },
          mac: '04:01:2a:0f:2a:02',
          type: 'private',
        },
      ],
      public: [
        {
          ipv4: { ip_address: '104.131.20.105', netmask: '255.255.192.0', gateway: '104.131.0.1' },
          ipv6: { ip_address: '2604:A880:0800:0010:0000:0000:017D:2001', cidr: 64, gateway: '2604:A880:0800:0010:0000:0000:0000:0001' },
          anchor_ipv4: { ip_address: '10.17.0.5', netmask: '255.255.0.0', gateway: '10.17.0.1' },
          mac: '04:01:2A:0F:2A:01',
          type: 'public',
        },
      ],
    },
    floating_ip: { ipv4: { active: false } },
    dns: { nameservers: ['2001:4860:4860::8844', '2001:4860:4860::8888', '8.8.8.8'] },
    features: { dhcp_enabled: false },
    user_data: '#cloud-config\nusers: []\n',
    ...over,
  };
}

const DO_JSON = '/metadata/v1.json';

describe('digitalocean', () => {
  it('reads attributes, keys, hostname, one networkd unit per interface, and userdata', async () => {
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doDoc()), headers: { 'content-type': 'application/json' } } });
    const md = await digitalocean.metadata(env());
    expect(md.attributes).toEqual({
      COREOS_HOSTNAME: 'sample-droplet',
      COREOS_DIGITALOCEAN_HOSTNAME: 'sample-droplet',
      COREOS_DIGITALOCEAN_DROPLET_ID: '2756294',
      COREOS_DIGITALOCEAN_REGION: 'nyc3',
      COREOS_DIGITALOCEAN_IPV4_PUBLIC_0: '104.131.20.105',
      COREOS_DIGITALOCEAN_IPV6_PUBLIC_0: '2604:a880:800:10::17d:2001',
      COREOS_DIGITALOCEAN_IPV4_ANCHOR_0: '10.17.0.5',
      COREOS_DIGITALOCEAN_IPV4_PRIVATE_0: '10.132.255.113',
      COREOS_IPV4_PUBLIC: '104.131.20.105',
      COREOS_IPV6_PUBLIC: '2604:a880:800:10::17d:2001',
      COREOS_IPV4_PRIVATE: '10.132.255.113',
    });
    expect(md.hostname).toBe('sample-droplet');
    expect(md.sshKeys).toEqual([KEY.a, KEY.b]);
    expect(md.networkUnits.map((u) => u.name)).toEqual(['10-oem-0-public.network', '10-oem-1-private.network']);
    expect(md.networkUnits[0]!.content).toBe(
      [
        '# Written by oem-agent from the DigitalOcean metadata.',
        '[Match]',
        'MACAddress=04:01:2a:0f:2a:01',
        '',
        '[Network]',
        'Address=104.131.20.105/18',
        'Address=2604:a880:800:10::17d:2001/64',
        'Address=10.17.0.5/16',
        'Gateway=104.131.0.1',
        'Gateway=2604:a880:800:10::1',
        'DNS=2001:4860:4860::8844',
        'DNS=2001:4860:4860::8888',
        'DNS=8.8.8.8',
        '',
      ].join('\n'),
    );
    // The private interface gets no default route.
    expect(md.networkUnits[1]!.content).toContain('MACAddress=04:01:2a:0f:2a:02\n');
    expect(md.networkUnits[1]!.content).toContain('Address=10.132.255.113/16\n');
    expect(md.networkUnits[1]!.content).not.toContain('Gateway=');
    expect((await digitalocean.userdata(env()))?.toString()).toBe('#cloud-config\nusers: []\n');
  });

  it("Afterburn's names and values: IPv6 in short form, private IPv6, anchors of public interfaces only", async () => {
    const doc = doDoc();
    const ifaces = doc.interfaces as { private: Record<string, unknown>[]; public: Record<string, unknown>[] };
    ifaces.private[0]!.ipv6 = { ip_address: 'FD00:0:0:0:0:0:0:5', cidr: 64, gateway: 'fd00::1' };
    // Not something DigitalOcean gives; if it did, it must not take the public anchor's name.
    ifaces.private[0]!.anchor_ipv4 = { ip_address: '10.18.0.9', netmask: '255.255.0.0', gateway: '10.18.0.1' };
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doc) } });
    const a = (await digitalocean.metadata(env())).attributes;
    expect(a.COREOS_DIGITALOCEAN_IPV6_PRIVATE_0).toBe('fd00::5');
    expect(a.COREOS_IPV6_PRIVATE).toBe('fd00::5');
    expect(a.COREOS_DIGITALOCEAN_IPV4_ANCHOR_0).toBe('10.17.0.5');
    expect(Object.keys(a).filter((k) => k.includes('ANCHOR'))).toEqual(['COREOS_DIGITALOCEAN_IPV4_ANCHOR_0']);
    // Missing: an interface without IPv6 has no IPv6 names; none without interfaces.
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doDoc({ interfaces: { public: [{ ipv4: { ip_address: '104.131.20.105', netmask: '255.255.192.0', gateway: '104.131.0.1' }, mac: '04:01:2a:0f:2a:01' }] } })) } });
    const b = (await digitalocean.metadata(env())).attributes;
    expect(Object.keys(b).filter((k) => k.includes('IPV6') || k.includes('ANCHOR') || k.includes('PRIVATE'))).toEqual([]);
    // Hostile: an IPv6 address with a zone or text after it is no address.
    const bad = doDoc();
    (bad.interfaces as { public: Record<string, unknown>[] }).public[0]!.ipv6 = { ip_address: '2604:a880::1\nGateway=6.6.6.6', cidr: 64, gateway: '2604:a880::2' };
    mock.reset({ [DO_JSON]: { body: JSON.stringify(bad) } });
    const c = await digitalocean.metadata(env());
    expect(c.attributes.COREOS_DIGITALOCEAN_IPV6_PUBLIC_0).toBeUndefined();
    expect(c.networkUnits[0]!.content).not.toContain('6.6.6.6');
  });

  it('404 is absent: empty metadata, no userdata', async () => {
    mock.reset({});
    const md = await digitalocean.metadata(env());
    expect(md).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await digitalocean.userdata(env())).toBeNull();
  });

  it('retries a 500, then reads the document', async () => {
    mock.reset({ [DO_JSON]: [{ status: 500 }, { body: JSON.stringify(doDoc({ user_data: '' })) }] });
    expect((await digitalocean.metadata(env())).attributes.COREOS_DIGITALOCEAN_DROPLET_ID).toBe('2756294');
    expect(mock.hits(DO_JSON)).toBe(2);
    expect(await digitalocean.userdata(env())).toBeNull();
  });

  it('garbage JSON is a clear error', async () => {
    mock.reset({ [DO_JSON]: { body: '<html>502 Bad Gateway</html>' } });
    await expect(digitalocean.metadata(env())).rejects.toThrow(/^digitalocean: http:\/\/127\.0\.0\.1:\d+\/metadata\/v1\.json is not valid JSON \(28 bytes\)/);
    mock.reset({ [DO_JSON]: { body: '[1, 2]' } });
    await expect(digitalocean.metadata(env())).rejects.toThrow(/is not a JSON object/);
  });

  it('hostile values: ../ in interface names, injected unit lines, NUL, newline in the hostname', async () => {
    const doc = doDoc({
      hostname: 'droplet\nevil',
      region: 'nyc3\0',
      droplet_id: '12; rm -rf /',
      public_keys: [KEY.a, 'ssh-rsa AAAA\ncommand="sh" ' + KEY.b, 42],
      interfaces: {
        '../../../etc/systemd/system': [{ ipv4: { ip_address: '1.2.3.4', netmask: '255.0.0.0' }, mac: '04:01:2a:0f:2a:09' }],
        public: [
          { ipv4: { ip_address: '104.131.20.105\nDNS=6.6.6.6', netmask: '255.255.192.0' }, mac: '04:01:2a:0f:2a:01' },
          { ipv4: { ip_address: '104.131.20.106', netmask: '255.255.192.0', gateway: '104.131.0.1\n[Network]' }, mac: '../etc' },
          { ipv4: { ip_address: '104.131.20.107', netmask: '255.0.255.0' }, mac: '04:01:2a:0f:2a:03' },
          { ipv6: { ip_address: '2604:a880::1', cidr: 129 }, mac: '04:01:2a:0f:2a:04' },
          { ipv4: { ip_address: '104.131.20.108', netmask: '255.255.255.0', gateway: '104.131.20.1' }, mac: '04:01:2a:0f:2a:05' },
        ],
      },
      dns: { nameservers: ['8.8.8.8\nDNS=1.1.1.1', '1.1.1.1'] },
    });
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doc) } });
    const md = await digitalocean.metadata(env());
    expect(md.hostname).toBeUndefined();
    expect(md.attributes.COREOS_DIGITALOCEAN_REGION).toBeUndefined();
    expect(md.attributes.COREOS_DIGITALOCEAN_DROPLET_ID).toBeUndefined();
    // The key line is split: the invalid half is dropped, the valid half kept.
    expect(md.sshKeys).toEqual([KEY.a, `command="sh" ${KEY.b}`]);
    expect(md.networkUnits.map((u) => u.name)).toEqual(['10-oem-0-public.network']);
    expect(md.networkUnits[0]!.content).toBe(
      '# Written by oem-agent from the DigitalOcean metadata.\n[Match]\nMACAddress=04:01:2a:0f:2a:05\n\n[Network]\nAddress=104.131.20.108/24\nGateway=104.131.20.1\nDNS=1.1.1.1\n',
    );
    expect(logs.some((l) => l.includes('ignoring the interface list "../../../etc/systemd/system"'))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// values.ts

describe('the safety checks', () => {
  it('hostnames: RFC 1123, lowercased, at most 253 characters', () => {
    const l: string[] = [];
    const log = (x: string) => l.push(x);
    expect(cleanHostname('Web-01.Example.COM.', log)).toBe('web-01.example.com');
    for (const bad of ['a b', 'a\nb', 'a\0b', 'a/b', '../etc', '-a', 'a-', 'a..b', '', 'a_b', `${'a'.repeat(64)}.com`, `${'abcdefghi.'.repeat(26)}com`]) {
      expect(cleanHostname(bad, log), bad).toBeUndefined();
    }
    expect(hostnameProblem('a\nb')).toMatch(/control characters/);
    expect(staticHostname(`${'a'.repeat(40)}.${'b'.repeat(40)}`)).toBe('a'.repeat(40));
    expect(staticHostname('short.example')).toBe('short.example');
  });

  it('environment files: keys [A-Z0-9_], no newline or NUL, addresses checked, special values quoted', () => {
    const l: string[] = [];
    const r = envFileContent(
      {
        COREOS_B: 'b c',
        COREOS_A: 'plain-1.2:3/4',
        'lower': 'x',
        'A=B': 'x',
        COREOS_NL: 'a\nB=c',
        COREOS_NUL: 'a\0b',
        COREOS_Q: "it's $(x)",
        COREOS_IPV4_PUBLIC: '1.2.3.4',
        COREOS_IPV6_PRIVATE: '1.2.3.4',
        COREOS_DIGITALOCEAN_IPV4_ANCHOR_0: 'fe80::1',
        COREOS_SHELL: '$(reboot)',
      },
      (x) => l.push(x),
    );
    expect(r.content).toBe("COREOS_A=plain-1.2:3/4\nCOREOS_B='b c'\nCOREOS_IPV4_PUBLIC=1.2.3.4\nCOREOS_SHELL='$(reboot)'\n");
    expect(r.dropped.sort()).toEqual(['A=B', 'COREOS_DIGITALOCEAN_IPV4_ANCHOR_0', 'COREOS_IPV6_PRIVATE', 'COREOS_NL', 'COREOS_NUL', 'COREOS_Q', 'lower'].sort());
    expect(l.some((x) => x.includes('COREOS_NUL') && x.includes('NUL byte'))).toBe(true);
  });

  it('SSH keys: each invalid key is dropped with a log line, the others kept, duplicates once', () => {
    const l: string[] = [];
    expect(cleanSshKeys([KEY.a, 'garbage', `${KEY.b}\n\n# comment\n${KEY.a}`, '-----BEGIN OPENSSH PRIVATE KEY-----'], (x) => l.push(x))).toEqual([KEY.a, KEY.b]);
    expect(l).toHaveLength(2);
  });

  it('networkd unit names are ours: labels reduced to a safe word', () => {
    expect(networkUnitName(0, 'eth0')).toBe('10-oem-0-eth0.network');
    expect(networkUnitName(3, '../../etc/passwd', 'netdev')).toBe('10-oem-3-______etc_passwd.netdev');
    expect(networkUnitName(1, '')).toBe('10-oem-1-if.network');
    expect(validNetworkUnitName('10-oem-0-eth0.network')).toBe(true);
    for (const bad of ['../x.network', 'a/b.network', '..network', 'x.service', '.network', 'a\n.network']) expect(validNetworkUnitName(bad), bad).toBe(false);
    expect(netmaskToPrefix('255.255.192.0')).toBe(18);
    expect(netmaskToPrefix('255.0.255.0')).toBeUndefined();
    expect(netmaskToPrefix('0.0.0.0')).toBe(0);
  });

  it('refuses unit names a provider took from metadata', async () => {
    const root = await makeRoot();
    const ctx = writeContext(root, (x) => logs.push(x));
    const names = await writeNetworkUnits(ctx, [
      { name: '../../etc/shadow.network', content: 'x' },
      { name: '10-oem-0-eth0.network', content: '[Match]\nName=eth0\n' },
      { name: '10-oem-1-x.network', content: 'a\0b' },
    ]);
    expect(names).toEqual(['10-oem-0-eth0.network']);
    expect(await readdir(join(root, 'etc/systemd/network'))).toEqual(['10-oem-0-eth0.network']);
    await expect(stat(join(root, 'etc/shadow.network'))).rejects.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------
// The registry

describe('the registry', () => {
  it('knows every oem id; each module loads and serves its id', async () => {
    // Afterburn's platforms (aws is ec2, gcp is gce) and the CoreOS-era ones.
    const afterburn = ['akamai', 'aliyun', 'ec2', 'azure', 'azurestack', 'cloudstack', 'digitalocean', 'exoscale', 'gce', 'hetzner', 'ibmcloud', 'ibmcloud-classic', 'kubevirt', 'openstack', 'oraclecloud', 'packet', 'powervs', 'proxmoxve', 'scaleway', 'upcloud', 'vultr', 'vmware'];
    const coreos = ['cloudsigma', 'hyperv', 'ipxe', 'niftycloud', 'pxe', 'rackspace', 'rackspace-onmetal', 'vagrant'];
    expect(Object.keys(PROVIDERS).sort()).toEqual([...new Set([...afterburn, ...coreos])].sort());
    for (const id of Object.keys(PROVIDERS) as (keyof typeof PROVIDERS)[]) {
      const m = await PROVIDERS[id]();
      expect([m.id, ...(m.also ?? [])]).toContain(id);
      // A platform that expects a boot check-in has one, and only those (what `oem providers` and the README say).
      expect(typeof m.checkIn === 'function', `${id} check-in`).toBe(agentPlatform(id)!.does.includes('check-in'));
    }
    expect(AGENT_PLATFORMS.filter((id) => agentPlatform(id)!.does.includes('check-in'))).toEqual(['azure', 'azurestack', 'packet', 'scaleway']);
    const root = await makeRoot();
    const none = await cli(cliArgs('check-in', root, 'ec2'));
    expect(none.code).toBe(0);
    expect(none.out).toContain('oem-agent: ec2: the platform expects no boot check-in; nothing to do');
    expect(mock.seen).toEqual([]);
  });

  it('finds the provider: explicit, else flatcar.oem.id= / coreos.oem.id= (the last one wins)', async () => {
    expect(oemIdFromCmdline('BOOT_IMAGE=/vmlinuz flatcar.oem.id=ec2 console=ttyS0')).toBe('ec2');
    expect(oemIdFromCmdline('coreos.oem.id=gce flatcar.oem.id="digitalocean"')).toBe('digitalocean');
    expect(oemIdFromCmdline('xflatcar.oem.id=ec2 root=/dev/sda')).toBeUndefined();
    expect(await detectProviderId('gce', { root: '/nonexistent', cmdline: 'flatcar.oem.id=ec2' })).toBe('gce');
    expect((await detectProvider(undefined, { root: '/nonexistent', cmdline: 'quiet coreos.oem.id=ec2' })).id).toBe('ec2');
    const root = await makeRoot();
    await mkdir(join(root, 'proc'));
    await writeFile(join(root, 'proc', 'cmdline'), 'root=LABEL=ROOT flatcar.oem.id=digitalocean\n');
    expect(await detectProviderId(undefined, { root })).toBe('digitalocean');
    await expect(detectProviderId('nope', { root })).rejects.toThrow(/unknown provider "nope" \(from --provider\); known: akamai, aliyun, azure, .*, ec2, .*vmware, vultr/);
    await expect(detectProviderId(undefined, { root: '/nonexistent', cmdline: 'quiet' })).rejects.toThrow(/no provider: give --provider/);
  });

  it('defaultEnv has the real defaults, and overrides', () => {
    const e = defaultEnv({ http: { tries: 2 } });
    expect(e).toMatchObject({
      root: '/',
      metadataUrl: 'http://169.254.169.254',
      configDrive: '/media/configdrive',
      serialDevice: '/dev/ttyS1',
      vmtoolsd: ['vmtoolsd'],
      azureDvd: '/media/azure',
      http: { tries: 2, backoffMs: 1000, maxBackoffMs: 5000, timeoutMs: 10_000 },
    });
  });
});

// ---------------------------------------------------------------------------------------------
// The subcommands, end to end

describe('oem-agent subcommands on a temporary root', () => {
  it('metadata: writes /run/coreos/metadata (0644), rejecting values with NUL or newline', async () => {
    const root = await makeRoot();
    mock.reset(ec2Routes({ [`${EC2}/instance-type`]: { body: 't3.micro\0evil' }, [`${EC2}/placement/availability-zone`]: { body: 'us-east-1a\nX=1' } }));
    const r = await cli(cliArgs('metadata', root, 'ec2'));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const file = join(root, 'run/coreos/metadata');
    expect(await readFile(file, 'utf8')).toBe(
      [
        'COREOS_EC2_AVAILABILITY_ZONE_ID=use1-az4',
        'COREOS_EC2_HOSTNAME=ip-172-31-10-20.ec2.internal',
        'COREOS_EC2_INSTANCE_ID=i-0abcdef1234567890',
        'COREOS_EC2_IPV4_LOCAL=172.31.10.20',
        'COREOS_EC2_IPV4_PUBLIC=54.210.1.2',
        'COREOS_EC2_IPV6=2600:1f18:4a3:6902:8e7c:1a2b:3c4d:5e6f',
        'COREOS_EC2_PUBLIC_HOSTNAME=ec2-54-210-1-2.compute-1.amazonaws.com',
        'COREOS_EC2_REGION=us-east-1',
        'COREOS_HOSTNAME=ip-172-31-10-20.ec2.internal',
        'COREOS_IPV4_PRIVATE=172.31.10.20',
        'COREOS_IPV4_PUBLIC=54.210.1.2',
        '',
      ].join('\n'),
    );
    expect(await modeOf(file)).toBe(0o644);
    expect(r.out).toMatch(/oem-agent: rejected the attribute "COREOS_EC2_INSTANCE_TYPE": the value contains a NUL byte/);
    expect(r.out).toMatch(/oem-agent: rejected the attribute "COREOS_EC2_AVAILABILITY_ZONE": the value contains a newline/);
    expect(r.out).toMatch(/oem-agent: wrote \/run\/coreos\/metadata \(0644 root:root, 11 attributes\)/);
    // Again: nothing changes.
    const again = await cli(cliArgs('metadata', root, 'ec2'));
    expect(again.out).toMatch(/oem-agent: unchanged \/run\/coreos\/metadata/);
    // --attributes elsewhere in the root.
    const other = await cli(cliArgs('metadata', root, 'ec2', '--attributes', '/etc/oem-metadata.env'));
    expect(other.code).toBe(0);
    expect(await readFile(join(root, 'etc/oem-metadata.env'), 'utf8')).toContain('COREOS_IPV4_PUBLIC=54.210.1.2\n');
  });

  it("metadata --format afterburn: /run/metadata/afterburn with exactly Afterburn's names for ec2 (AWS) and gce (GCP)", async () => {
    const root = await makeRoot();
    mock.reset(ec2Routes());
    const r = await agent(agentArgs('metadata', root, 'ec2', mock.base, '--format', 'afterburn'));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const file = join(root, 'run/metadata/afterburn');
    // Afterburn's AWS attributes (src/providers/aws/mod.rs), all ten, and nothing else.
    expect(await readFile(file, 'utf8')).toBe(
      [
        'AFTERBURN_AWS_AVAILABILITY_ZONE=us-east-1a',
        'AFTERBURN_AWS_AVAILABILITY_ZONE_ID=use1-az4',
        'AFTERBURN_AWS_HOSTNAME=ip-172-31-10-20.ec2.internal',
        'AFTERBURN_AWS_INSTANCE_ID=i-0abcdef1234567890',
        'AFTERBURN_AWS_INSTANCE_TYPE=t3.micro',
        'AFTERBURN_AWS_IPV4_LOCAL=172.31.10.20',
        'AFTERBURN_AWS_IPV4_PUBLIC=54.210.1.2',
        'AFTERBURN_AWS_IPV6=2600:1f18:4a3:6902:8e7c:1a2b:3c4d:5e6f',
        'AFTERBURN_AWS_PUBLIC_HOSTNAME=ec2-54-210-1-2.compute-1.amazonaws.com',
        'AFTERBURN_AWS_REGION=us-east-1',
        '',
      ].join('\n'),
    );
    expect(await modeOf(file)).toBe(0o644);
    await expect(stat(join(root, 'run/coreos/metadata'))).rejects.toThrow();

    const root2 = await makeRoot();
    mock.always = FLAVOR;
    mock.reset(gceRoutes());
    mock.guard = gceGuard;
    const g = await agent(agentArgs('metadata', root2, 'gce', mock.base, '--format', 'afterburn'));
    expect(g.err).toBe('');
    expect(g.code).toBe(0);
    // Afterburn's GCP attributes (src/providers/gcp/mod.rs), all four, with its values.
    expect(await readFile(join(root2, 'run/metadata/afterburn'), 'utf8')).toBe(
      [
        'AFTERBURN_GCP_HOSTNAME=flatcar-1.us-central1-a.c.my-project.internal',
        'AFTERBURN_GCP_IP_EXTERNAL_0=34.71.2.3',
        'AFTERBURN_GCP_IP_LOCAL_0=10.128.0.7',
        'AFTERBURN_GCP_MACHINE_TYPE=projects/123456789/machineTypes/e2-medium',
        '',
      ].join('\n'),
    );
  });

  it('metadata: never writes through a symlink out of the root', async () => {
    const root = await makeRoot();
    const outside = join(work, 'outside');
    await mkdir(outside, { recursive: true });
    await mkdir(join(root, 'run'), { recursive: true });
    await symlink(outside, join(root, 'run', 'coreos'));
    mock.reset(ec2Routes());
    const r = await cli(cliArgs('metadata', root, 'ec2'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/refusing to follow the symlink/);
    expect(await readdir(outside)).toEqual([]);
  });

  it.runIf(process.getuid?.() === 0)('ssh-keys: the coreos-metadata key set, merged into authorized_keys, other sets kept, owned by core [root]', async () => {
    const root = await makeRoot();
    const setsDir = join(root, 'home/core/.ssh/authorized_keys.d');
    await mkdir(setsDir, { recursive: true });
    await writeFile(join(setsDir, 'oem-agent'), `${KEY.e}\n`);
    mock.reset(ec2Routes());
    const r = await cli(cliArgs('ssh-keys', root, 'ec2'));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(await readFile(join(setsDir, 'coreos-metadata'), 'utf8')).toBe(`${KEY.a}\n${KEY.b}\n`);
    expect(await readFile(join(setsDir, 'oem-agent'), 'utf8')).toBe(`${KEY.e}\n`);
    const ak = join(root, 'home/core/.ssh/authorized_keys');
    expect(await readFile(ak, 'utf8')).toBe(`# auto-generated by update-ssh-keys\n${KEY.a}\n${KEY.b}\n${KEY.e}\n`);
    for (const [p, mode] of [
      [join(root, 'home/core/.ssh'), 0o700],
      [setsDir, 0o700],
      [join(setsDir, 'coreos-metadata'), 0o600],
      [ak, 0o600],
    ] as const) {
      const st = await lstat(p);
      expect(st.mode & 0o7777, p).toBe(mode);
      expect([st.uid, st.gid], p).toEqual([500, 500]);
    }
    // A key removed from the metadata disappears; the other set stays.
    mock.reset(ec2Routes({ [`${EC2}/public-keys/`]: { body: '1=bob' } }));
    expect((await cli(cliArgs('ssh-keys', root, 'ec2'))).code).toBe(0);
    expect(await readFile(ak, 'utf8')).toBe(`# auto-generated by update-ssh-keys\n${KEY.b}\n${KEY.e}\n`);
  });

  it.runIf(process.getuid?.() === 0)('ssh-keys: an existing authorized_keys is kept as old_authorized_keys; an unknown user fails [root]', async () => {
    const root = await makeRoot();
    await mkdir(join(root, 'home/core/.ssh'), { recursive: true });
    await writeFile(join(root, 'home/core/.ssh/authorized_keys'), `# mine\n${KEY.c}\n`);
    mock.always = FLAVOR;
    mock.reset(gceRoutes());
    const r = await cli(cliArgs('ssh-keys', root, 'gce'));
    expect(r.code).toBe(0);
    expect(await readFile(join(root, 'home/core/.ssh/authorized_keys.d/old_authorized_keys'), 'utf8')).toBe(`${KEY.c}\n`);
    const ak = await readFile(join(root, 'home/core/.ssh/authorized_keys'), 'utf8');
    expect(ak.split('\n').filter((l) => l.startsWith('ssh-')).map(body)).toEqual([body(KEY.a), body(KEY.c), body(KEY.d)]);
    const bad = await cli(cliArgs('ssh-keys', root, 'gce', '--user', 'nobody'));
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/cannot write SSH keys for nobody: no such user in \/etc\/passwd/);
  });

  it('hostname: writes /etc/hostname; nothing when the platform has none or a bad one', async () => {
    const root = await makeRoot();
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doDoc({ hostname: 'My-Droplet' })) } });
    const r = await cli(cliArgs('hostname', root, 'digitalocean'));
    expect(r.code).toBe(0);
    expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe('my-droplet\n');
    expect(await modeOf(join(root, 'etc/hostname'))).toBe(0o644);
    const root2 = await makeRoot();
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doDoc({ hostname: 'evil\n/etc/passwd' })) } });
    const r2 = await cli(cliArgs('hostname', root2, 'digitalocean'));
    expect(r2.code).toBe(0);
    expect(r2.out).toMatch(/ignoring digitalocean: the hostname "evil\\n\/etc\/passwd": it contains control characters/);
    expect(r2.out).toMatch(/no hostname in the metadata; \/etc\/hostname is left as it is/);
    await expect(stat(join(root2, 'etc/hostname'))).rejects.toThrow();
    // The action checks again, whatever a provider hands it.
    expect(await writeHostname(writeContext(root2, (x) => logs.push(x)), 'a\0b')).toBeUndefined();
    expect(logs).toContain('no valid hostname in the metadata; /etc/hostname is left as it is');
    await expect(stat(join(root2, 'etc/hostname'))).rejects.toThrow();
  });

  it('network: networkd units (0644) for digitalocean; the metadata host for gce, once', async () => {
    const root = await makeRoot();
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doDoc()) } });
    const r = await cli(cliArgs('network', root, 'digitalocean'));
    expect(r.code).toBe(0);
    const dir = join(root, 'etc/systemd/network');
    expect(await readdir(dir)).toEqual(['10-oem-0-public.network', '10-oem-1-private.network']);
    expect(await modeOf(join(dir, '10-oem-0-public.network'))).toBe(0o644);
    expect(await readFile(join(dir, '10-oem-0-public.network'), 'utf8')).toContain('Gateway=104.131.0.1\n');

    await writeFile(join(root, 'etc/hosts'), '127.0.0.1 localhost\n::1 localhost');
    mock.always = FLAVOR;
    mock.reset(gceRoutes());
    for (let i = 0; i < 2; i++) {
      const g = await cli(cliArgs('network', root, 'gce'));
      expect(g.code).toBe(0);
    }
    expect(await readFile(join(root, 'etc/hosts'), 'utf8')).toBe('127.0.0.1 localhost\n::1 localhost\n169.254.169.254 metadata\n');
  });

  it('userdata: an agent config is validated and applied once, with its own stamp', async () => {
    const root = await makeRoot();
    const config = 'version: 1\nfiles:\n  - path: /etc/motd\n    content: "from userdata\\n"\n    mode: "0644"\n';
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doDoc({ user_data: config })) } });
    const r = await cli(cliArgs('userdata', root, 'digitalocean'));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(await readFile(join(root, 'etc/motd'), 'utf8')).toBe('from userdata\n');
    expect(r.out).toMatch(/oem-agent: the userdata is an agent config; applying it once/);
    expect(r.out).toMatch(/oem-agent: provisioned .*stamp .*var\/lib\/oem-agent\/userdata\/provisioned/);
    expect(await stat(join(root, 'var/lib/oem-agent/userdata/provisioned'))).toBeTruthy();
    await expect(stat(join(root, 'var/lib/oem-agent/provisioned'))).rejects.toThrow();
    const again = await cli(cliArgs('userdata', root, 'digitalocean'));
    expect(again.code).toBe(0);
    expect(again.out).toMatch(/already provisioned/);
  });

  it('userdata: an agent config with errors is reported with positions, applies nothing, exit 1', async () => {
    const root = await makeRoot();
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doDoc({ user_data: 'version: 1\nfiles:\n  - path: etc/motd\n    content: x\n' })) } });
    const r = await cli(cliArgs('userdata', root, 'digitalocean'));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/oem-agent: userdata: error at \$\.files\[0\]\.path \(line 3, col \d+\): /);
    expect(r.err).toMatch(/the userdata is an agent config with errors; nothing of it was applied/);
    await expect(stat(join(root, 'etc/motd'))).rejects.toThrow();
  });

  it('userdata: a cloud-config is saved, and handed to coreos-cloudinit when there is one', async () => {
    const root = await makeRoot();
    mock.reset(ec2Routes());
    const r = await cli(cliArgs('userdata', root, 'ec2'));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/the userdata is a cloud-config, but \/usr\/bin\/coreos-cloudinit .*is not there; saved it in \/var\/lib\/oem-agent\/userdata\.raw/);
    const raw = join(root, 'var/lib/oem-agent/userdata.raw');
    expect(await readFile(raw, 'utf8')).toBe('#cloud-config\nhostname: from-cloud-config\n');
    expect(await modeOf(raw)).toBe(0o600);
    await mkdir(join(root, 'usr/bin'), { recursive: true });
    await writeFile(join(root, 'usr/bin/coreos-cloudinit'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    const r2 = await cli(cliArgs('userdata', root, 'ec2'));
    expect(r2.code).toBe(0);
    expect(r2.out).toMatch(/would run \/usr\/bin\/coreos-cloudinit --from-file \/var\/lib\/oem-agent\/userdata\.raw \(not run: the root is /);
  });

  it('userdata: none, and anything else saved (gzip is unpacked)', async () => {
    const root = await makeRoot();
    mock.reset(ec2Routes({ '/2009-04-04/user-data': { status: 404 } }));
    const r = await cli(cliArgs('userdata', root, 'ec2'));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/oem-agent: no userdata\n/);
    mock.reset(ec2Routes({ '/2009-04-04/user-data': { body: '' } }));
    expect((await cli(cliArgs('userdata', root, 'ec2'))).out).toMatch(/oem-agent: no userdata\n/);
    const { gzipSync } = await import('node:zlib');
    mock.reset(ec2Routes({ '/2009-04-04/user-data': { body: gzipSync(Buffer.from('just some text\n')) } }));
    const g = await cli(cliArgs('userdata', root, 'ec2'));
    expect(g.code).toBe(0);
    expect(g.out).toMatch(/is neither an agent config nor a cloud-config; saved it/);
    expect(await readFile(join(root, 'var/lib/oem-agent/userdata.raw'), 'utf8')).toBe('just some text\n');
    expect(classifyUserdata(Buffer.from('#!/bin/bash\necho hi\n')).kind).toBe('script');
    expect(classifyUserdata(Buffer.from('{"ignition": {"version": "3.4.0"}}')).kind).toBe('ignition');
    expect(classifyUserdata(Buffer.from('{"version": 1}')).kind).toBe('agent-config');
    expect(classifyUserdata(Buffer.from('version: 2\n')).kind).toBe('other');
    // One limit for userdata, fetched or unpacked: 16 MiB. A gzip that unpacks beyond it is kept as it came.
    const limit = 16 * 1024 * 1024;
    const atLimit = gzipSync(Buffer.concat([Buffer.from('version: 1\n#'), Buffer.alloc(limit - 12, 0x20)]));
    expect(classifyUserdata(atLimit)).toMatchObject({ kind: 'agent-config' });
    const bomb = gzipSync(Buffer.alloc(limit + 1, 0x20));
    expect(classifyUserdata(bomb)).toMatchObject({ kind: 'other', bytes: bomb });
  });

  it('userdata: the stamp directory can be moved; coreos-cloudinit is only announced for another root', async () => {
    const root = await makeRoot();
    const stampDir = join(work, 'stamps-elsewhere');
    mock.reset({ [DO_JSON]: { body: JSON.stringify(doDoc({ user_data: 'version: 1\n' })) } });
    const r = await cli(cliArgs('userdata', root, 'digitalocean', '--stamp-dir', stampDir));
    expect(r.code).toBe(0);
    expect(await stat(join(stampDir, 'provisioned'))).toBeTruthy();
    // Another root: coreos-cloudinit is never run from a test, only announced.
    await mkdir(join(root, 'usr/bin'), { recursive: true });
    await writeFile(join(root, 'usr/bin/coreos-cloudinit'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    const calls: string[][] = [];
    const runner = async (cmd: string, args: string[]) => {
      calls.push([cmd, ...args]);
      return { stdout: 'ok', stderr: '', exitCode: 0 };
    };
    expect(await applyUserdata({ provider: ec2, env: env(root), run: runner }, Buffer.from('#cloud-config\n'))).toBe('cloud-config');
    expect(calls).toEqual([]);
    expect(logs.some((l) => l.startsWith('the userdata is a cloud-config: would run /usr/bin/coreos-cloudinit'))).toBe(true);
  });

  it('a dead service ends with a clear error and exit 1; an unknown provider with exit 2', async () => {
    const root = await makeRoot();
    const dead = await deadUrl();
    const r = await cli(['metadata', '--root', root, '--provider', 'digitalocean', '--metadata-url', dead, '--http-tries', '2', '--http-backoff-ms', '5']);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`oem-agent: error: GET ${dead}/metadata/v1.json failed after 2 attempts: fetch failed: ECONNREFUSED\n`);
    await expect(stat(join(root, 'run/coreos/metadata'))).rejects.toThrow();
    const u = await cli(cliArgs('metadata', root, 'nimbus'));
    expect(u.code).toBe(2);
    expect(u.err).toMatch(/unknown provider "nimbus" \(from --provider\); known: akamai, .*rackspace-onmetal, .*vagrant, vmware, vultr/);
    const bad = await cli(['metadata', '--root', root, '--provider', 'ec2', '--metadata-url', mock.base, '--http-tries', 'many']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--http-tries must be a whole number/);
    const opt = await cli(['metadata', '--bogus']);
    expect(opt.code).toBe(2);
  });

  it('finds the provider on the given kernel command line', async () => {
    const root = await makeRoot();
    mock.always = FLAVOR;
    mock.reset(gceRoutes());
    const r = await cli(['hostname', '--root', root, '--metadata-url', mock.base, '--cmdline', 'root=LABEL=ROOT flatcar.oem.id=gce quiet', '--http-tries', '2']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/oem-agent: hostname: provider gce/);
    expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe('flatcar-1.us-central1-a.c.my-project.internal\n');
  });
});
