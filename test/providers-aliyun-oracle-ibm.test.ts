/**
 * The aliyun and oraclecloud providers against a mock metadata service on 127.0.0.1 (an ephemeral
 * port) answering in the platforms' documented formats (Afterburn's fixtures), and the ibmcloud,
 * ibmcloud-classic and powervs providers against config-drive directories under temporary roots;
 * then the agent's subcommands end to end. Nothing here talks to 100.100.100.200 or 169.254.169.254.
 *
 * Files are written owned by root (and by the core user for SSH keys): CI runs as root.
 */
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { agent, agentArgs, deadUrl, edKey, type Reply, type Route, type Seen, useMetadataMock } from './helpers/metadata-mock.js';
import { maskPrefix, plainValue } from '../oem/providers/afterburn-common.js';
import { provider as aliyun } from '../oem/providers/aliyun.js';
import { classicNetwork, provider as classic } from '../oem/providers/ibmcloud-classic.js';
import { cloudConfigParts, parseMetaData, provider as ibmcloud, vendorDataKeys } from '../oem/providers/ibmcloud.js';
import { provider as oraclecloud } from '../oem/providers/oraclecloud.js';
import { provider as powervs } from '../oem/providers/powervs.js';
import { validNetworkUnitName } from '../oem/providers/values.js';

const KEY = { a: edKey('alice@example'), b: edKey('bob@example'), c: edKey('carol@example') };
const USERDATA = '#cloud-config\nhostname: from-userdata\n';
const DRIVE = '/media/configdrive';

const { mock, work, logs, env, makeRoot } = useMetadataMock('oem-aliyun-oracle-ibm-', () => ({ configDrive: DRIVE }));
let dead: string;

beforeAll(async () => {
  dead = await deadUrl();
});
const logged = (re: RegExp) => logs.some((l) => re.test(l));
const EMPTY = { attributes: {}, sshKeys: [], networkUnits: [] };

/** Writes files under `dir` (string/Buffer as is, anything else as JSON). */
async function writeTree(dir: string, files: Record<string, unknown>): Promise<void> {
  for (const [path, value] of Object.entries(files)) {
    const full = join(dir, path);
    await mkdir(dirname(full), { recursive: true });
    await writeFile(full, typeof value === 'string' || Buffer.isBuffer(value) ? value : JSON.stringify(value, null, 2));
  }
}

/** A new root with a config drive at DRIVE holding `files`. */
async function rootWithDrive(files: Record<string, unknown>): Promise<string> {
  const root = await makeRoot();
  await mkdir(join(root, DRIVE), { recursive: true });
  await writeTree(join(root, DRIVE), files);
  return root;
}

/** The CLI on a drive platform: no metadata service at all (a dead URL, should anything ask one). */
function driveCli(cmd: string, root: string, provider: string, ...more: string[]): Promise<{ code: number; out: string; err: string }> {
  return agent([cmd, '--root', root, '--provider', provider, '--config-drive', DRIVE, '--metadata-url', dead, '--http-tries', '1', ...more]);
}

// ---------------------------------------------------------------------------------------------
// Values

describe('plain values and netmasks', () => {
  it('keeps ids and zones, drops anything a shell or an environment file could read as code', () => {
    const log = (l: string) => logs.push(l);
    expect(plainValue(' ocid1.instance.oc1.phx.abc ', 'x', log)).toBe('ocid1.instance.oc1.phx.abc');
    expect(plainValue('EMIr:PHX-AD-1', 'x', log)).toBe('EMIr:PHX-AD-1');
    expect(plainValue(42, 'x', log)).toBe('42');
    for (const bad of ['$(reboot)', 'a b', 'a\nb', "it's", 'a;b', '`x`', 'x'.repeat(256), '\0']) expect(plainValue(bad, 'the value', log)).toBeUndefined();
    expect(plainValue({}, 'the value', log)).toBeUndefined();
    expect(logs).toHaveLength(9);
    expect(plainValue('', 'x', log)).toBeUndefined();
    expect(plainValue(null, 'x', log)).toBeUndefined();
    expect(logs).toHaveLength(9);
  });

  it('turns netmasks into prefix lengths', () => {
    expect(maskPrefix('255.255.255.192', 4)).toBe(26);
    expect(maskPrefix('0.0.0.0', 4)).toBe(0);
    expect(maskPrefix('255.0.255.0', 4)).toBeUndefined();
    expect(maskPrefix('ffff:ffff:ffff:ffff::', 6)).toBe(64);
    expect(maskPrefix('::', 6)).toBe(0);
    expect(maskPrefix('ffff::ffff', 6)).toBeUndefined();
    expect(maskPrefix(24, 4)).toBe(24);
    expect(maskPrefix('33', 4)).toBeUndefined();
    expect(maskPrefix('255.255.255.0', 6)).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// aliyun

const ALI = '/latest/meta-data';
const ALI_TOKEN = 'AQAEAFakeAliyunToken==';
const ALI_VALUES: Record<string, string> = {
  eipv4: '47.98.10.20',
  hostname: 'iZbp1h9n3xxxxZ',
  'image-id': 'aliyun_3_x64_20G_alibase_20230727.vhd',
  'instance-id': 'i-bp1h9n3xxxxxxxxxxxxx',
  'instance/instance-type': 'ecs.g6.large',
  'private-ipv4': '172.16.0.10',
  'public-ipv4': '47.98.10.21',
  // A final line break is not part of a value.
  'region-id': 'cn-hangzhou\n',
  'vpc-id': 'vpc-bp1opxu1zkhn00gzv26cc',
  'zone-id': 'cn-hangzhou-i',
};
const ALI_ATTRS = {
  COREOS_ALIYUN_EIPV4: '47.98.10.20',
  COREOS_ALIYUN_HOSTNAME: 'iZbp1h9n3xxxxZ',
  COREOS_ALIYUN_IMAGE_ID: 'aliyun_3_x64_20G_alibase_20230727.vhd',
  COREOS_ALIYUN_INSTANCE_ID: 'i-bp1h9n3xxxxxxxxxxxxx',
  COREOS_ALIYUN_INSTANCE_TYPE: 'ecs.g6.large',
  COREOS_ALIYUN_IPV4_PRIVATE: '172.16.0.10',
  COREOS_ALIYUN_IPV4_PUBLIC: '47.98.10.21',
  COREOS_ALIYUN_REGION_ID: 'cn-hangzhou',
  COREOS_ALIYUN_VPC_ID: 'vpc-bp1opxu1zkhn00gzv26cc',
  COREOS_ALIYUN_ZONE_ID: 'cn-hangzhou-i',
  COREOS_HOSTNAME: 'izbp1h9n3xxxxz',
  COREOS_IPV4_PRIVATE: '172.16.0.10',
  COREOS_IPV4_PUBLIC: '47.98.10.21',
};

function aliyunRoutes(over: Record<string, Route> = {}): Record<string, Route> {
  const routes: Record<string, Route> = {
    'PUT /latest/api/token': (req) =>
      req.headers['x-aliyun-ecs-metadata-token-ttl-seconds'] === '21600' ? { body: ALI_TOKEN } : { status: 400, body: 'missing ttl' },
    // Two ids for one key (Afterburn's mock): the key is written once.
    [`${ALI}/public-keys/`]: { body: '0/\nskp-bp1/\ndup/\n' },
    [`${ALI}/public-keys/0/openssh-key`]: { body: KEY.a },
    [`${ALI}/public-keys/skp-bp1/openssh-key`]: { body: `${KEY.b}\n` },
    [`${ALI}/public-keys/dup/openssh-key`]: { body: KEY.a },
    '/latest/user-data': { body: USERDATA },
  };
  for (const [path, value] of Object.entries(ALI_VALUES)) routes[`${ALI}/${path}`] = { body: value };
  return { ...routes, ...over };
}

/** Security hardening mode only: a GET without the token is refused. */
function requireAliyunToken(req: Seen): Reply | undefined {
  if (req.method === 'GET' && req.headers['x-aliyun-ecs-metadata-token'] !== ALI_TOKEN) return { status: 403, body: 'Forbidden' };
  return undefined;
}

describe('aliyun', () => {
  it('reads every value with the session token, at 100.100.100.200 by default', async () => {
    expect(aliyun.metadataUrl).toBe('http://100.100.100.200');
    mock.reset(aliyunRoutes());
    mock.guard = requireAliyunToken;
    const md = await aliyun.metadata(env());
    expect(md).toEqual({ attributes: ALI_ATTRS, hostname: 'izbp1h9n3xxxxz', sshKeys: [KEY.a, KEY.b], networkUnits: [] });
    expect(mock.seen[0]).toMatchObject({ method: 'PUT', path: '/latest/api/token' });
    const gets = mock.seen.filter((s) => s.method === 'GET');
    expect(gets).toHaveLength(14);
    expect(gets.every((s) => s.headers['x-aliyun-ecs-metadata-token'] === ALI_TOKEN)).toBe(true);
    expect((await aliyun.userdata(env()))?.toString()).toBe(USERDATA);
    expect(logs).toEqual([]);
  });

  it('goes without a token (normal mode) when the token PUT is refused (403, 404, 405)', async () => {
    for (const status of [403, 404, 405]) {
      mock.reset(aliyunRoutes({ 'PUT /latest/api/token': { status, body: 'no' } }));
      expect((await aliyun.userdata(env()))?.toString()).toBe(USERDATA);
    }
    expect(mock.seen.filter((s) => s.method === 'GET').every((s) => s.headers['x-aliyun-ecs-metadata-token'] === undefined)).toBe(true);
    for (const status of [403, 404, 405]) expect(logs).toContain(`aliyun: no metadata token (HTTP ${status}); going on without one (normal mode)`);
  });

  it('takes each missing value (404 or empty) as absent, and nothing at all as no metadata', async () => {
    // Half the values 404, the other half empty: each one's absence shows in the attributes.
    const notFound = ['eipv4', 'image-id', 'instance/instance-type', 'region-id', 'vpc-id', 'public-keys/skp-bp1/openssh-key'];
    mock.reset(aliyunRoutes(Object.fromEntries(notFound.map((p) => [`${ALI}/${p}`, { status: 404 }]))));
    let md = await aliyun.metadata(env());
    expect(md.attributes).toEqual({
      COREOS_ALIYUN_HOSTNAME: 'iZbp1h9n3xxxxZ',
      COREOS_ALIYUN_INSTANCE_ID: 'i-bp1h9n3xxxxxxxxxxxxx',
      COREOS_ALIYUN_IPV4_PRIVATE: '172.16.0.10',
      COREOS_ALIYUN_IPV4_PUBLIC: '47.98.10.21',
      COREOS_ALIYUN_ZONE_ID: 'cn-hangzhou-i',
      COREOS_HOSTNAME: 'izbp1h9n3xxxxz',
      COREOS_IPV4_PRIVATE: '172.16.0.10',
      COREOS_IPV4_PUBLIC: '47.98.10.21',
    });
    expect(md.hostname).toBe('izbp1h9n3xxxxz');
    expect(md.sshKeys).toEqual([KEY.a]);
    expect(logs).toContain('aliyun: public key skp-bp1 has no openssh-key');
    const empty = ['hostname', 'instance-id', 'private-ipv4', 'public-ipv4', 'zone-id'];
    mock.reset(aliyunRoutes(Object.fromEntries(empty.map((p) => [`${ALI}/${p}`, { body: '' }]))));
    md = await aliyun.metadata(env());
    // Without public-ipv4 the EIP is the public address.
    expect(md.attributes).toEqual({
      COREOS_ALIYUN_EIPV4: '47.98.10.20',
      COREOS_ALIYUN_IMAGE_ID: 'aliyun_3_x64_20G_alibase_20230727.vhd',
      COREOS_ALIYUN_INSTANCE_TYPE: 'ecs.g6.large',
      COREOS_ALIYUN_REGION_ID: 'cn-hangzhou',
      COREOS_ALIYUN_VPC_ID: 'vpc-bp1opxu1zkhn00gzv26cc',
      COREOS_IPV4_PUBLIC: '47.98.10.20',
    });
    expect(md.hostname).toBeUndefined();
    mock.reset(aliyunRoutes({ '/latest/user-data': { body: '' } }));
    expect(await aliyun.userdata(env())).toBeNull();
    // Only the token: no values, no keys, no userdata.
    mock.reset({ 'PUT /latest/api/token': { body: ALI_TOKEN } });
    expect(await aliyun.metadata(env())).toEqual(EMPTY);
    expect(await aliyun.userdata(env())).toBeNull();
  });

  it('retries a failing service until it answers', async () => {
    mock.reset(
      aliyunRoutes({
        'PUT /latest/api/token': [{ status: 500 }, { body: ALI_TOKEN }],
        [`${ALI}/instance-id`]: [{ status: 500 }, { status: 503 }, { body: ALI_VALUES['instance-id']! }],
        '/latest/user-data': [{ status: 502 }, { body: USERDATA }],
      }),
    );
    mock.guard = requireAliyunToken;
    expect((await aliyun.metadata(env())).attributes).toEqual(ALI_ATTRS);
    expect(mock.hits(`${ALI}/instance-id`)).toBe(3);
    expect(logged(/PUT http:\/\/127\.0\.0\.1:\d+\/latest\/api\/token failed \(attempt 1\/3\): HTTP 500/)).toBe(true);
    expect(logged(/instance-id failed \(attempt 2\/3\): HTTP 503/)).toBe(true);
    expect((await aliyun.userdata(env()))?.toString()).toBe(USERDATA);
  });

  it('fails with the URL after the configured tries: a dead service, a service that keeps failing', async () => {
    await expect(aliyun.metadata(env(undefined, { metadataUrl: dead }))).rejects.toThrow(`PUT ${dead}/latest/api/token failed after 3 attempts`);
    await expect(aliyun.userdata(env(undefined, { metadataUrl: dead }))).rejects.toThrow(`PUT ${dead}/latest/api/token failed after 3 attempts`);
    mock.reset(aliyunRoutes({ [`${ALI}/eipv4`]: { status: 500 } }));
    await expect(aliyun.metadata(env())).rejects.toThrow(`GET ${mock.base}${ALI}/eipv4 failed after 3 attempts: HTTP 500`);
    expect(mock.hits(`${ALI}/eipv4`)).toBe(3);
  });

  it('a hardening-only service refuses requests without the token (403), at once', async () => {
    mock.reset(aliyunRoutes({ 'PUT /latest/api/token': { status: 405 } }));
    mock.guard = (req) => (req.method === 'PUT' ? undefined : requireAliyunToken(req));
    await expect(aliyun.metadata(env())).rejects.toThrow(`GET ${mock.base}${ALI}/eipv4 failed: HTTP 403`);
    expect(mock.hits(`${ALI}/eipv4`)).toBe(1);
  });

  it('drops hostile values with a log line; key ids never leave public-keys/', async () => {
    mock.reset(
      aliyunRoutes({
        [`${ALI}/hostname`]: { body: 'evil\nCOREOS_IPV4_PUBLIC=6.6.6.6' },
        [`${ALI}/instance-id`]: { body: '$(reboot)' },
        [`${ALI}/image-id`]: { body: 'img x' },
        [`${ALI}/private-ipv4`]: { body: '10.0.0.999' },
        [`${ALI}/public-ipv4`]: { body: '1.2.3.4; reboot' },
        [`${ALI}/eipv4`]: { body: '2001:db8::1' },
        [`${ALI}/region-id`]: { body: `cn-${'x'.repeat(300)}` },
        [`${ALI}/public-keys/`]: { body: '../../../etc/passwd/\n..\n%2e%2e/\n0/\nbad/\n' },
        [`${ALI}/public-keys/bad/openssh-key`]: { body: 'ssh-rsa not*base64 x\n-----BEGIN OPENSSH PRIVATE KEY-----' },
        [`${ALI}/public-keys/0/openssh-key`]: { body: `${KEY.c}\nrm -rf /` },
      }),
    );
    const md = await aliyun.metadata(env());
    expect(md).toEqual({
      attributes: {
        COREOS_ALIYUN_INSTANCE_TYPE: 'ecs.g6.large',
        COREOS_ALIYUN_VPC_ID: ALI_VALUES['vpc-id'],
        COREOS_ALIYUN_ZONE_ID: ALI_VALUES['zone-id'],
      },
      sshKeys: [KEY.c],
      networkUnits: [],
    });
    expect(logged(/aliyun: hostname "evil\\nCOREOS_IPV4_PUBLIC=6\.6\.6\.6": not a plain value/)).toBe(true);
    expect(logged(/aliyun: instance-id "\$\(reboot\)": not a plain value/)).toBe(true);
    expect(logged(/aliyun: private-ipv4 "10\.0\.0\.999": not an IPv4 address/)).toBe(true);
    expect(logged(/aliyun: eipv4 "2001:db8::1": not an IPv4 address/)).toBe(true);
    expect(logged(/ignoring the public-keys entry "\.\.\/\.\.\/\.\.\/etc\/passwd\/": not a key id/)).toBe(true);
    expect(logged(/ignoring an invalid SSH key/)).toBe(true);
    expect(mock.seen.every((s) => !s.path.includes('..') && !s.path.includes('%2e') && !s.path.includes('/etc/'))).toBe(true);
    expect(logs.every((l) => !l.includes('\n'))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// oraclecloud

const OCI_PATH = '/opc/v2/instance/';
/** Afterburn's fixture (the documented /opc/v2/instance/ document), with real keys and userdata. */
const OCI_INSTANCE = {
  availabilityDomain: 'EMIr:PHX-AD-1',
  faultDomain: 'FAULT-DOMAIN-3',
  compartmentId: 'ocid1.tenancy.oc1..exampleuniqueID',
  displayName: 'my-example-instance',
  hostname: 'my-hostname',
  id: 'ocid1.instance.oc1.phx.exampleuniqueID',
  image: 'ocid1.image.oc1.phx.exampleuniqueID',
  metadata: { ssh_authorized_keys: `${KEY.a}\n${KEY.b}`, user_data: Buffer.from(USERDATA).toString('base64') },
  region: 'phx',
  canonicalRegionName: 'us-phoenix-1',
  ociAdName: 'phx-ad-1',
  regionInfo: { realmKey: 'oc1', realmDomainComponent: 'oraclecloud.com', regionKey: 'PHX', regionIdentifier: 'us-phoenix-1' },
  shape: 'VM.Standard.E3.Flex',
  state: 'Running',
  timeCreated: 1600381928581,
  freeformTags: { Department: 'Finance' },
  definedTags: { Operations: { CostCenter: '42' } },
};
const OCI_VNICS = [
  { vnicId: 'ocid1.vnic.oc1.phx.abc', privateIp: '10.0.0.2', vlanTag: 0, macAddr: '02:00:17:00:00:01', virtualRouterIp: '10.0.0.1', subnetCidrBlock: '10.0.0.0/24' },
];
const OCI_ATTRS = {
  COREOS_ORACLECLOUD_AVAILABILITY_DOMAIN: 'EMIr:PHX-AD-1',
  COREOS_ORACLECLOUD_COMPARTMENT_ID: 'ocid1.tenancy.oc1..exampleuniqueID',
  COREOS_ORACLECLOUD_FAULT_DOMAIN: 'FAULT-DOMAIN-3',
  COREOS_ORACLECLOUD_HOSTNAME: 'my-hostname',
  COREOS_ORACLECLOUD_INSTANCE_ID: 'ocid1.instance.oc1.phx.exampleuniqueID',
  COREOS_ORACLECLOUD_INSTANCE_SHAPE: 'VM.Standard.E3.Flex',
  COREOS_ORACLECLOUD_REGION_ID: 'us-phoenix-1',
  COREOS_HOSTNAME: 'my-hostname',
  COREOS_IPV4_PRIVATE: '10.0.0.2',
};

function ociRoutes(instance: unknown = OCI_INSTANCE, over: Record<string, Route> = {}): Record<string, Route> {
  return { [OCI_PATH]: { body: JSON.stringify(instance) }, '/opc/v2/vnics/': { body: JSON.stringify(OCI_VNICS) }, ...over };
}

/** IMDSv2: requests without `Authorization: Bearer Oracle` are refused. */
function requireBearer(req: Seen): Reply | undefined {
  if (req.headers.authorization !== 'Bearer Oracle') return { status: 401, body: '{"code": "NotAuthenticated", "message": "The required information to complete authentication was not provided."}' };
  return undefined;
}

describe('oraclecloud', () => {
  it('reads the instance document and the first VNIC with Authorization: Bearer Oracle', async () => {
    mock.reset(ociRoutes());
    mock.guard = requireBearer;
    const md = await oraclecloud.metadata(env());
    expect(md).toEqual({ attributes: OCI_ATTRS, hostname: 'my-hostname', sshKeys: [KEY.a, KEY.b], networkUnits: [] });
    expect((await oraclecloud.userdata(env()))?.toString()).toBe(USERDATA);
    expect(mock.seen.map((s) => s.path)).toEqual([OCI_PATH, '/opc/v2/vnics/', OCI_PATH]);
    expect(mock.seen.every((s) => s.headers.authorization === 'Bearer Oracle')).toBe(true);
    expect(logs).toEqual([]);
  });

  it('takes each missing field as absent', async () => {
    const fields: Record<string, string[]> = {
      availabilityDomain: ['COREOS_ORACLECLOUD_AVAILABILITY_DOMAIN'],
      compartmentId: ['COREOS_ORACLECLOUD_COMPARTMENT_ID'],
      faultDomain: ['COREOS_ORACLECLOUD_FAULT_DOMAIN'],
      hostname: ['COREOS_ORACLECLOUD_HOSTNAME', 'COREOS_HOSTNAME'],
      id: ['COREOS_ORACLECLOUD_INSTANCE_ID'],
      shape: ['COREOS_ORACLECLOUD_INSTANCE_SHAPE'],
      canonicalRegionName: ['COREOS_ORACLECLOUD_REGION_ID'],
    };
    for (const [field, keys] of Object.entries(fields)) {
      const doc: Record<string, unknown> = { ...OCI_INSTANCE };
      delete doc[field];
      mock.reset(ociRoutes(doc));
      const md = await oraclecloud.metadata(env());
      const want: Record<string, string> = { ...OCI_ATTRS };
      for (const k of keys) delete want[k];
      expect(md.attributes, field).toEqual(want);
      expect(md.hostname, field).toBe(field === 'hostname' ? undefined : 'my-hostname');
    }
    // No metadata map: no keys, no userdata; no VNICs: no address.
    const { metadata: _, ...bare } = OCI_INSTANCE;
    mock.reset(ociRoutes(bare, { '/opc/v2/vnics/': { status: 404 } }));
    const md = await oraclecloud.metadata(env());
    expect(md.sshKeys).toEqual([]);
    expect(md.attributes.COREOS_IPV4_PRIVATE).toBeUndefined();
    expect(await oraclecloud.userdata(env())).toBeNull();
    mock.reset(ociRoutes({ ...OCI_INSTANCE, metadata: { ssh_authorized_keys: '' } }, { '/opc/v2/vnics/': { body: '[]' } }));
    expect(await oraclecloud.metadata(env())).toMatchObject({ sshKeys: [] });
    expect(await oraclecloud.userdata(env())).toBeNull();
    // No instance document at all.
    mock.reset();
    expect(await oraclecloud.metadata(env())).toEqual(EMPTY);
    expect(await oraclecloud.userdata(env())).toBeNull();
    expect(logs).toContain(`oraclecloud: the metadata service has no ${OCI_PATH}`);
  });

  it('retries a failing service until it answers; a failing VNIC list is logged and skipped', async () => {
    mock.reset(ociRoutes(OCI_INSTANCE, { [OCI_PATH]: [{ status: 500 }, { status: 503 }, { body: JSON.stringify(OCI_INSTANCE) }], '/opc/v2/vnics/': { status: 500 } }));
    mock.guard = requireBearer;
    const md = await oraclecloud.metadata(env());
    const { COREOS_IPV4_PRIVATE: _, ...want } = OCI_ATTRS;
    expect(md.attributes).toEqual(want);
    expect(mock.hits(OCI_PATH)).toBe(3);
    expect(logged(/instance\/ failed \(attempt 1\/3\): HTTP 500/)).toBe(true);
    expect(logged(/oraclecloud: GET .*\/opc\/v2\/vnics\/ failed after 3 attempts: HTTP 500 .*; going on without the VNIC addresses/)).toBe(true);
  });

  it('fails with the URL after the configured tries; a 401 (no Bearer header accepted) at once', async () => {
    await expect(oraclecloud.metadata(env(undefined, { metadataUrl: dead }))).rejects.toThrow(`GET ${dead}${OCI_PATH} failed after 3 attempts`);
    await expect(oraclecloud.userdata(env(undefined, { metadataUrl: dead }))).rejects.toThrow(`GET ${dead}${OCI_PATH} failed after 3 attempts`);
    mock.reset(ociRoutes());
    mock.guard = (req) => requireBearer({ ...req, headers: {} });
    await expect(oraclecloud.metadata(env())).rejects.toThrow(`GET ${mock.base}${OCI_PATH} failed: HTTP 401`);
    expect(mock.hits(OCI_PATH)).toBe(1);
    mock.reset(ociRoutes(OCI_INSTANCE, { [OCI_PATH]: { body: '<html>oops</html>' } }));
    await expect(oraclecloud.metadata(env())).rejects.toThrow(/instance\/ is not valid JSON/);
  });

  it('drops hostile values with a log line; refuses userdata that is not base64', async () => {
    mock.reset(
      ociRoutes(
        {
          ...OCI_INSTANCE,
          hostname: '$(reboot)',
          id: 'ocid1\nCOREOS_IPV4_PUBLIC=6.6.6.6',
          availabilityDomain: 'AD 1',
          shape: { evil: true },
          metadata: { ssh_authorized_keys: `garbage key\n${KEY.c}\n-----BEGIN RSA PRIVATE KEY-----`, user_data: 'not base64!' },
        },
        { '/opc/v2/vnics/': { body: JSON.stringify([{ privateIp: '10.0.0.300' }]) } },
      ),
    );
    const md = await oraclecloud.metadata(env());
    expect(md).toEqual({
      attributes: {
        COREOS_ORACLECLOUD_COMPARTMENT_ID: OCI_ATTRS.COREOS_ORACLECLOUD_COMPARTMENT_ID,
        COREOS_ORACLECLOUD_FAULT_DOMAIN: OCI_ATTRS.COREOS_ORACLECLOUD_FAULT_DOMAIN,
        COREOS_ORACLECLOUD_REGION_ID: OCI_ATTRS.COREOS_ORACLECLOUD_REGION_ID,
      },
      sshKeys: [KEY.c],
      networkUnits: [],
    });
    expect(logged(/oraclecloud: hostname "\$\(reboot\)": not a plain value/)).toBe(true);
    expect(logged(/oraclecloud: id "ocid1\\nCOREOS_IPV4_PUBLIC=6\.6\.6\.6": not a plain value/)).toBe(true);
    expect(logged(/oraclecloud: shape: not a string/)).toBe(true);
    expect(logged(/privateIp of the first VNIC "10\.0\.0\.300": not an IPv4 address/)).toBe(true);
    expect(logs.filter((l) => l.startsWith('ignoring an invalid SSH key'))).toHaveLength(2);
    await expect(oraclecloud.userdata(env())).rejects.toThrow('oraclecloud: metadata.user_data is not valid base64');
  });
});

// ---------------------------------------------------------------------------------------------
// ibmcloud (VPC, gen2): a cidata drive

/** vendor-data as IBM Cloud VPC writes it (Afterburn's fixture layout, real keys, folded lines). */
function vendorData(keys: string[]): string {
  const [k1 = '', k2 = ''] = keys;
  const fold = (k: string) => k.replace(/ (\S+)$/, '\n  $1');
  return [
    'Content-Type: multipart/form-data; boundary=3efa30189c9e0e8ebc24a4decbbf4c2be7b26120c1cdd7cb7bc2ecb0c07c',
    'MIME-Version: 1.0',
    '',
    '--3efa30189c9e0e8ebc24a4decbbf4c2be7b26120c1cdd7cb7bc2ecb0c07c',
    'Content-Type: text/cloud-config',
    '',
    '#cloud-config',
    'disable_root: false',
    'ssh_authorized_keys:',
    `- ${fold(k1)}`,
    `- ${fold(k2)}`,
    'users:',
    '- default',
    '- name: root',
    '  lock-passwd: false',
    '',
    '--3efa30189c9e0e8ebc24a4decbbf4c2be7b26120c1cdd7cb7bc2ecb0c07c',
    'Content-Type: text/x-shellscript',
    '',
    '#!/bin/bash',
    'echo "ssh_authorized_keys: [not, these]"',
    '',
    '--3efa30189c9e0e8ebc24a4decbbf4c2be7b26120c1cdd7cb7bc2ecb0c07c',
    'Content-Type: text/cloud-config',
    '',
    '#cloud-config',
    'write_files:',
    '  - path: /etc/yum.repos.d/CentOS-Base.repo',
    '    content: "[base]"',
    '',
    '--3efa30189c9e0e8ebc24a4decbbf4c2be7b26120c1cdd7cb7bc2ecb0c07c--',
    '',
  ].join('\n');
}

const IBM_META = 'instance-id: 0717_2a588fe2-7da2-4321-1234-1199b77d3911\nlocal-hostname: test-instance-vpc-gen2\nfoo:      ba:r\n';
const IBM_ATTRS = {
  COREOS_IBMCLOUD_INSTANCE_ID: '0717_2a588fe2-7da2-4321-1234-1199b77d3911',
  COREOS_IBMCLOUD_LOCAL_HOSTNAME: 'test-instance-vpc-gen2',
  COREOS_HOSTNAME: 'test-instance-vpc-gen2',
};

describe('ibmcloud (cidata drive)', () => {
  it('reads meta-data, the keys of vendor-data and user-data, and never the network', async () => {
    const root = await rootWithDrive({ 'meta-data': IBM_META, 'vendor-data': vendorData([KEY.a, KEY.b]), 'user-data': USERDATA });
    const md = await ibmcloud.metadata(env(root));
    expect(md).toEqual({ attributes: IBM_ATTRS, hostname: 'test-instance-vpc-gen2', sshKeys: [KEY.a, KEY.b], networkUnits: [] });
    expect((await ibmcloud.userdata(env(root)))?.toString()).toBe(USERDATA);
    expect(logs).toEqual([]);
    expect(mock.seen).toEqual([]);
  });

  it('parses meta-data lines and MIME vendor-data the way the platform writes them', () => {
    expect(parseMetaData(IBM_META)).toEqual(new Map([['instance-id', '0717_2a588fe2-7da2-4321-1234-1199b77d3911'], ['local-hostname', 'test-instance-vpc-gen2'], ['foo', 'ba:r']]));
    expect(parseMetaData('local-hostname: "quoted"\r\n  nested: x\n# c: d\nempty:\n')).toEqual(new Map([['local-hostname', 'quoted']]));
    const log = (l: string) => logs.push(l);
    // A bare #cloud-config, a base64 part, a quoted boundary, CRLF lines.
    expect(vendorDataKeys(`#cloud-config\nssh_authorized_keys: ['${KEY.c}']\n`, log)).toEqual([KEY.c]);
    const b64 = Buffer.from(`#cloud-config\nssh_authorized_keys:\n  - ${KEY.b}\n`).toString('base64');
    const mime = ['Content-Type: multipart/mixed;', ' boundary="==b=="', '', 'preamble', '--==b==', 'Content-Type: text/cloud-config; charset="utf-8"', 'Content-Transfer-Encoding: base64', '', b64, '--==b==--', ''].join('\r\n');
    expect(vendorDataKeys(mime, log)).toEqual([KEY.b]);
    expect(cloudConfigParts('Content-Type: multipart/mixed\n\n--x\n', log)).toEqual([]);
    expect(logged(/a multipart\/mixed part without a boundary/)).toBe(true);
    expect(cloudConfigParts('#!/bin/sh\necho hi\n', log)).toEqual([]);
  });

  it('takes each missing file as absent, with a log line', async () => {
    let root = await rootWithDrive({ 'vendor-data': vendorData([KEY.a, KEY.b]), 'user-data': USERDATA });
    expect(await ibmcloud.metadata(env(root))).toEqual({ ...EMPTY, sshKeys: [KEY.a, KEY.b] });
    expect(logged(/ibmcloud: no meta-data on the config drive \/media\/configdrive/)).toBe(true);
    root = await rootWithDrive({ 'meta-data': 'instance-id: i-1\n' });
    expect(await ibmcloud.metadata(env(root))).toEqual({ ...EMPTY, attributes: { COREOS_IBMCLOUD_INSTANCE_ID: 'i-1' } });
    expect(await ibmcloud.userdata(env(root))).toBeNull();
    root = await rootWithDrive({ 'meta-data': 'local-hostname: h1\n', 'vendor-data': vendorData([]), 'user-data': '' });
    expect(await ibmcloud.metadata(env(root))).toEqual({ ...EMPTY, attributes: { COREOS_IBMCLOUD_LOCAL_HOSTNAME: 'h1', COREOS_HOSTNAME: 'h1' }, hostname: 'h1' });
    expect(await ibmcloud.userdata(env(root))).toBeNull();
  });

  it('a missing drive is no metadata, not an error', async () => {
    const root = await makeRoot();
    expect(await ibmcloud.metadata(env(root))).toEqual(EMPTY);
    expect(await ibmcloud.userdata(env(root))).toBeNull();
    expect(logs).toContain(`ibmcloud: no config drive at ${DRIVE} (under ${root}); no metadata from it`);
  });

  it('never follows a symlink off the drive; refuses huge files', async () => {
    const root = await rootWithDrive({});
    // Real files outside the drive, in the root and on the host: neither may be read.
    await writeTree(root, { 'etc/ibm-meta': 'instance-id: stolen\n', 'etc/ibm-user': 'stolen' });
    await writeTree(work, { 'outside-meta': 'instance-id: stolen\n' });
    await symlink('/etc/ibm-meta', join(root, DRIVE, 'meta-data'));
    await symlink('../../../../../../../../etc/ibm-user', join(root, DRIVE, 'user-data'));
    await symlink(join(work, 'outside-meta'), join(root, DRIVE, 'vendor-data'));
    expect(await ibmcloud.metadata(env(root))).toEqual(EMPTY);
    expect(await ibmcloud.userdata(env(root))).toBeNull();
    const huge = await rootWithDrive({ 'meta-data': `instance-id: i-1\n${'#'.repeat(300 * 1024)}\n`, 'user-data': Buffer.alloc(16 * 1024 * 1024 + 1, 0x61) });
    logs.length = 0;
    expect(await ibmcloud.metadata(env(huge))).toEqual(EMPTY);
    expect(await ibmcloud.userdata(env(huge))).toBeNull();
    expect(logged(/\/media\/configdrive\/meta-data is larger than 256 KiB; ignored/)).toBe(true);
    expect(logged(/\/media\/configdrive\/user-data is larger than 16 MiB; ignored/)).toBe(true);
  });

  it('drops hostile values with a log line', async () => {
    const b64bad = ['Content-Type: multipart/mixed; boundary=b', '', '--b', 'Content-Type: text/cloud-config', 'Content-Transfer-Encoding: base64', '', '!!!', '--b--'].join('\n');
    const root = await rootWithDrive({
      'meta-data': 'instance-id: $(reboot)\nlocal-hostname: evil;reboot\n',
      'vendor-data': `#cloud-config\nssh_authorized_keys:\n  - garbage\n  - ${KEY.a}\n  - {a: 1}\n`,
    });
    expect(await ibmcloud.metadata(env(root))).toEqual({ ...EMPTY, sshKeys: [KEY.a] });
    expect(logged(/ibmcloud: instance-id "\$\(reboot\)": not a plain value/)).toBe(true);
    expect(logged(/ibmcloud: local-hostname "evil;reboot": not a plain value/)).toBe(true);
    expect(logged(/ignoring an invalid SSH key/)).toBe(true);
    expect(logged(/not a string/)).toBe(true);
    const log = (l: string) => logs.push(l);
    expect(vendorDataKeys(b64bad, log)).toEqual([]);
    expect(logged(/a text\/cloud-config part is not valid base64/)).toBe(true);
    expect(vendorDataKeys('#cloud-config\nssh_authorized_keys: [unclosed\n', log)).toEqual([]);
    expect(logged(/not valid YAML/)).toBe(true);
    // A host name with an underscore is a fine attribute but not a host name.
    const under = await rootWithDrive({ 'meta-data': 'local-hostname: test_instance\n' });
    expect(await ibmcloud.metadata(env(under))).toEqual({ ...EMPTY, attributes: { COREOS_IBMCLOUD_LOCAL_HOSTNAME: 'test_instance' } });
    expect(logged(/ibmcloud: local-hostname "test_instance": it has the label/)).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// ibmcloud-classic: a config-2 drive with a network

/** Afterburn's fixtures (tests/fixtures/ibmcloud-classic), with a real key. */
const CLASSIC_META = {
  hostname: 'rh-lbruno-classic01.example.cloud',
  name: 'rh-lbruno-classic01',
  uuid: '3c9085db-3eba-4ef2-9d97-d3ffcff6fffe',
  random_seed: 'YWJjCg==',
  crypt_key: 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ.....',
  configuration_token: 'eyJhbGciO...CI6IkpXVCJ9.eyJyZX...k5OX0.MWJmYmYxZGQzNW...gzYzk4OWU0Ng',
  public_keys: { '1602320': KEY.a },
};
const CLASSIC_NET = {
  links: [
    { id: 'interface_58965010', name: 'eth0', mtu: null, type: 'phy', ethernet_mac_address: '06:52:db:01:ff:d9' },
    { id: 'interface_58965014', name: 'eth1', mtu: null, type: 'phy', ethernet_mac_address: '06:f6:71:3b:64:01' },
  ],
  networks: [
    {
      id: 'network_142213448',
      link: 'interface_58965010',
      type: 'ipv4',
      network_id: 'network_142213448',
      ip_address: '10.135.202.146',
      netmask: '255.255.255.192',
      routes: [
        { network: '10.0.0.0', netmask: '255.0.0.0', gateway: '10.135.202.129' },
        { network: '161.26.0.0', netmask: '255.255.0.0', gateway: '10.135.202.129' },
        { network: '166.8.0.0', netmask: '255.252.0.0', gateway: '10.135.202.129' },
      ],
    },
    {
      id: 'network_142211974',
      link: 'interface_58965014',
      type: 'ipv4',
      network_id: 'network_142211974',
      ip_address: '133.133.209.229',
      netmask: '255.255.255.240',
      routes: [{ network: '0.0.0.0', netmask: '0.0.0.0', gateway: '133.133.209.225' }],
    },
  ],
  services: [
    { type: 'dns', address: '10.0.80.11' },
    { type: 'dns', address: '10.0.80.12' },
  ],
};
const CLASSIC_UNITS = [
  {
    name: '10-oem-0-eth0.network',
    content:
      '[Match]\nMACAddress=06:52:db:01:ff:d9\n\n[Network]\nDNS=10.0.80.11\nDNS=10.0.80.12\n\n[Address]\nAddress=10.135.202.146/26\n\n' +
      '[Route]\nDestination=10.0.0.0/8\nGateway=10.135.202.129\n\n[Route]\nDestination=161.26.0.0/16\nGateway=10.135.202.129\n\n[Route]\nDestination=166.8.0.0/14\nGateway=10.135.202.129\n',
  },
  {
    name: '10-oem-1-eth1.network',
    content: '[Match]\nMACAddress=06:f6:71:3b:64:01\n\n[Network]\nDNS=10.0.80.11\nDNS=10.0.80.12\n\n[Address]\nAddress=133.133.209.229/28\n\n[Route]\nDestination=0.0.0.0/0\nGateway=133.133.209.225\n',
  },
];
const CLASSIC_ATTRS = {
  COREOS_IBMCLOUD_CLASSIC_INSTANCE_ID: '3c9085db-3eba-4ef2-9d97-d3ffcff6fffe',
  COREOS_IBMCLOUD_CLASSIC_LOCAL_HOSTNAME: 'rh-lbruno-classic01',
  COREOS_HOSTNAME: 'rh-lbruno-classic01',
  COREOS_IPV4_PRIVATE: '10.135.202.146',
  COREOS_IPV4_PUBLIC: '133.133.209.229',
};
const LATEST = 'openstack/latest';

describe('ibmcloud-classic (config-2 drive)', () => {
  it('reads meta_data.json, network_data.json (networkd units) and user_data', async () => {
    const root = await rootWithDrive({ [`${LATEST}/meta_data.json`]: CLASSIC_META, [`${LATEST}/network_data.json`]: CLASSIC_NET, [`${LATEST}/user_data`]: USERDATA });
    const md = await classic.metadata(env(root));
    expect(md).toEqual({ attributes: CLASSIC_ATTRS, hostname: 'rh-lbruno-classic01', sshKeys: [KEY.a], networkUnits: CLASSIC_UNITS });
    expect((await classic.userdata(env(root)))?.toString()).toBe(USERDATA);
    expect(logs).toEqual([]);
  });

  it('takes each missing file or field as absent, with a log line', async () => {
    let root = await rootWithDrive({ [`${LATEST}/network_data.json`]: CLASSIC_NET });
    expect(await classic.metadata(env(root))).toEqual({
      attributes: { COREOS_IPV4_PRIVATE: '10.135.202.146', COREOS_IPV4_PUBLIC: '133.133.209.229' },
      sshKeys: [],
      networkUnits: CLASSIC_UNITS,
    });
    expect(logged(/ibmcloud-classic: no usable openstack\/latest\/meta_data\.json on the config drive/)).toBe(true);
    expect(await classic.userdata(env(root))).toBeNull();
    root = await rootWithDrive({ [`${LATEST}/meta_data.json`]: { uuid: 'u-1' } });
    expect(await classic.metadata(env(root))).toEqual({ ...EMPTY, attributes: { COREOS_IBMCLOUD_CLASSIC_INSTANCE_ID: 'u-1' } });
    expect(logged(/no usable openstack\/latest\/network_data\.json on the config drive; no network units/)).toBe(true);
    root = await rootWithDrive({ [`${LATEST}/meta_data.json`]: { name: 'n1', public_keys: {} }, [`${LATEST}/network_data.json`]: { links: [], networks: [] } });
    expect(await classic.metadata(env(root))).toEqual({ ...EMPTY, attributes: { COREOS_IBMCLOUD_CLASSIC_LOCAL_HOSTNAME: 'n1', COREOS_HOSTNAME: 'n1' }, hostname: 'n1' });
    // A drive without the openstack tree.
    root = await rootWithDrive({ 'ec2/latest/meta-data.json': {} });
    expect(await classic.metadata(env(root))).toEqual(EMPTY);
    logs.length = 0;
    root = await makeRoot();
    expect(await classic.metadata(env(root))).toEqual(EMPTY);
    expect(await classic.userdata(env(root))).toBeNull();
    expect(logged(/ibmcloud-classic: no config drive at \/media\/configdrive/)).toBe(true);
  });

  it('builds units from valid links, networks and routes only; unit names are ours', () => {
    const log = (l: string) => logs.push(l);
    const net = classicNetwork(
      {
        links: [
          { id: 'l0', name: '../../etc/systemd/system/x', ethernet_mac_address: '06:00:00:00:00:01' },
          { id: 'l1', name: 'eth1', ethernet_mac_address: 'zz:zz' },
          { id: 'l2', name: 'eth 2\n[Match]', ethernet_mac_address: 'nope' },
          { id: 'l3', name: 'eth3', ethernet_mac_address: '06-00-00-00-00-03' },
          { id: 'l0', name: 'eth9', ethernet_mac_address: '06:00:00:00:00:09' },
          'junk',
        ],
        networks: [
          { id: 'n0', link: 'l0', type: 'ipv4', ip_address: '192.0.2.10', netmask: '255.255.255.0', routes: [{ network: '0.0.0.0', netmask: '0.0.0.0', gateway: '1.1.1.1\n[Match]' }] },
          { id: 'n1', link: 'l1', type: 'ipv4', ip_address: '192.0.2.11\nDNS=6.6.6.6', netmask: '255.255.255.0' },
          { id: 'n2', link: 'l1', type: 'ipv4', ip_address: '192.0.2.12', netmask: '255.0.255.0' },
          { id: 'n3', link: 'l1', type: 'ipv6', ip_address: '2001:db8::12', netmask: 'ffff:ffff:ffff:ffff::', routes: [{ network: '::', netmask: '::', gateway: '2001:db8::1' }, { network: '10.0.0.0', netmask: '255.0.0.0', gateway: '2001:db8::1' }] },
          { id: 'n4', link: 'l2', type: 'ipv4', ip_address: '192.0.2.14', netmask: '255.255.255.0' },
          { id: 'n5', link: 'l3', type: 'ipv4', ip_address: '192.0.2.15', netmask: '24', routes: 'x' },
          { id: 'n6', link: 'nowhere', type: 'ipv4', ip_address: '192.0.2.16', netmask: '255.255.255.0' },
        ],
        services: [{ type: 'dns', address: '8.8.8.8; rm -rf /' }, { type: 'dns', address: '8.8.4.4' }, { type: 'ntp', address: 'x' }],
      },
      'network_data.json',
      log,
    );
    expect(net.units).toEqual([
      { name: '10-oem-0-link.network', content: '[Match]\nMACAddress=06:00:00:00:00:01\n\n[Network]\nDNS=8.8.4.4\n\n[Address]\nAddress=192.0.2.10/24\n' },
      {
        name: '10-oem-1-eth1.network',
        content: '[Match]\nName=eth1\n\n[Network]\nDNS=8.8.4.4\n\n[Address]\nAddress=2001:db8::12/64\n\n[Route]\nDestination=::/0\nGateway=2001:db8::1\n',
      },
      { name: '10-oem-2-eth3.network', content: '[Match]\nMACAddress=06:00:00:00:00:03\n\n[Network]\nDNS=8.8.4.4\n\n[Address]\nAddress=192.0.2.15/24\n' },
    ]);
    expect(net.attributes).toEqual({ COREOS_IPV4_PUBLIC: '192.0.2.10', COREOS_IPV6_PUBLIC: '2001:db8::12' });
    expect(net.units.every((u) => validNetworkUnitName(u.name))).toBe(true);
    for (const re of [
      /ignoring the name "\.\.\/\.\.\/etc\/systemd\/system\/x" of link "l0": not an interface name/,
      /the MAC address of link "l1" "zz:zz": not a MAC address/,
      /link "l2" has neither a MAC address nor a name; skipped/,
      /link "l0" appears twice/,
      /links\[5\] has no id/,
      /network "n0": routes\[0\] is not a usable IPv4 route/,
      /network "n1": the ip_address "192\.0\.2\.11\\nDNS=6\.6\.6\.6" is not an IP address/,
      /network "n2": the netmask "255\.0\.255\.0" is not an IPv4 netmask/,
      /network "n3": routes\[1\] is not a usable IPv6 route/,
      /network "n4" refers to no usable link/,
      /network "n5": ignoring "routes": not a list/,
      /the DNS service "8\.8\.8\.8; rm -rf \/": not an IPv4 or IPv6 address/,
    ]) {
      expect(logged(re), String(re)).toBe(true);
    }
    expect(logs.every((l) => !l.includes('\n'))).toBe(true);
  });

  it('never follows a symlink off the drive; refuses huge files', async () => {
    const root = await rootWithDrive({ [`${LATEST}/network_data.json`]: { pad: 'x'.repeat(1024 * 1024) } });
    await writeTree(root, { 'etc/meta_data.json': CLASSIC_META, 'etc/user_data': 'stolen' });
    await symlink('/etc/meta_data.json', join(root, DRIVE, LATEST, 'meta_data.json'));
    await symlink('../../../../../../../etc/user_data', join(root, DRIVE, LATEST, 'user_data'));
    expect(await classic.metadata(env(root))).toEqual(EMPTY);
    expect(await classic.userdata(env(root))).toBeNull();
    expect(logged(/openstack\/latest\/network_data\.json is larger than 1 MiB; ignored/)).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// powervs: a config-2 drive

/** Afterburn's fixture (tests/fixtures/powervs/meta_data.json), with a real key. */
const POWERVS_META = {
  admin_pass: 'oSfw8JEKHvBo',
  random_seed: 'YUQzy5FVwllOEHrRfvB9rims2Ztotnh',
  uuid: '1c0c0bb6-8dcd-4966-ad80-946b871814f1',
  availability_zone: 's922',
  keys: [{ data: KEY.b, type: 'ssh', name: '65b64c1f1c29460e8c2e4bbfbd893c2c_7c6cd5d4-a7aa-4d07-bb89-94f274bfeed0_user1-pub-key' }],
  hostname: 'test-tf-pvm.power-iaas.cloud.ibm.com',
  launch_index: 0,
  devices: [],
  meta: { ibmiDBQ: 'false', storage_pool: 'Tier1-Flash-2' },
  public_keys: { '65b64c1f1c29460e8c2e4bbfbd893c2c_7c6cd5d4-a7aa-4d07-bb89-94f274bfeed0_user1-pub-key': KEY.b },
  project_id: '15ea5428420d4d47be42e19332645a18',
  network_config: { content_path: '/content/0000', name: 'network_config' },
  name: 'test-tf-pVM',
};
const POWERVS_ATTRS = {
  COREOS_POWERVS_INSTANCE_ID: '1c0c0bb6-8dcd-4966-ad80-946b871814f1',
  COREOS_POWERVS_LOCAL_HOSTNAME: 'test-tf-pVM',
  COREOS_HOSTNAME: 'test-tf-pvm',
};

describe('powervs (config-2 drive)', () => {
  it('reads meta_data.json and user_data; no network', async () => {
    const root = await rootWithDrive({ [`${LATEST}/meta_data.json`]: POWERVS_META, [`${LATEST}/user_data`]: USERDATA, 'openstack/content/0000': 'auto eth0\n' });
    expect(await powervs.metadata(env(root))).toEqual({ attributes: POWERVS_ATTRS, hostname: 'test-tf-pvm', sshKeys: [KEY.b], networkUnits: [] });
    expect((await powervs.userdata(env(root)))?.toString()).toBe(USERDATA);
    expect(logs).toEqual([]);
  });

  it('takes each missing file or field as absent; a missing drive is no metadata', async () => {
    for (const [field, gone] of [
      ['uuid', ['COREOS_POWERVS_INSTANCE_ID']],
      ['name', ['COREOS_POWERVS_LOCAL_HOSTNAME', 'COREOS_HOSTNAME']],
      ['public_keys', []],
    ] as const) {
      const meta: Record<string, unknown> = { ...POWERVS_META };
      delete meta[field];
      const root = await rootWithDrive({ [`${LATEST}/meta_data.json`]: meta });
      const md = await powervs.metadata(env(root));
      const want: Record<string, string> = { ...POWERVS_ATTRS };
      for (const k of gone) delete want[k];
      expect(md.attributes, field).toEqual(want);
      expect(md.sshKeys, field).toEqual(field === 'public_keys' ? [] : [KEY.b]);
      expect(md.hostname, field).toBe(field === 'name' ? undefined : 'test-tf-pvm');
      expect(await powervs.userdata(env(root))).toBeNull();
    }
    const root = await makeRoot();
    expect(await powervs.metadata(env(root))).toEqual(EMPTY);
    expect(await powervs.userdata(env(root))).toBeNull();
    expect(logs).toContain(`powervs: no config drive at ${DRIVE} (under ${root}); no metadata from it`);
  });

  it('never follows a symlinked directory off the drive; refuses huge files; drops hostile values', async () => {
    const root = await rootWithDrive({});
    await writeTree(root, { 'etc/latest/meta_data.json': POWERVS_META });
    await symlink('/etc', join(root, DRIVE, 'openstack'));
    expect(await powervs.metadata(env(root))).toEqual(EMPTY);
    expect(logged(/powervs: no usable openstack\/latest\/meta_data\.json/)).toBe(true);
    const huge = await rootWithDrive({ [`${LATEST}/meta_data.json`]: { ...POWERVS_META, pad: 'x'.repeat(1024 * 1024) } });
    expect(await powervs.metadata(env(huge))).toEqual(EMPTY);
    expect(logged(/meta_data\.json is larger than 1 MiB; ignored/)).toBe(true);
    const hostile = await rootWithDrive({
      [`${LATEST}/meta_data.json`]: { uuid: '$(reboot)', name: 'evil\nCOREOS_IPV4_PUBLIC=6.6.6.6', public_keys: { '../../x': 'garbage', k: KEY.c, n: 7 } },
    });
    expect(await powervs.metadata(env(hostile))).toEqual({ ...EMPTY, sshKeys: [KEY.c] });
    expect(logged(/powervs: the uuid "\$\(reboot\)": not a plain value/)).toBe(true);
    expect(logged(/powervs: the name "evil\\nCOREOS_IPV4_PUBLIC=6\.6\.6\.6": not a plain value/)).toBe(true);
    expect(logged(/public key "\.\.\/\.\.\/x"\)/)).toBe(true);
    expect(logs.every((l) => !l.includes('\n'))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// End to end

async function readRoot(root: string, path: string): Promise<string> {
  return readFile(join(root, path), 'utf8');
}

/** metadata (both formats), hostname and ssh-keys through the CLI; returns the two attribute files. */
async function endToEnd(run: (cmd: string, ...more: string[]) => Promise<{ code: number; out: string; err: string }>, root: string): Promise<{ coreos: string; afterburn: string }> {
  for (const args of [['metadata'], ['metadata', '--format', 'afterburn'], ['hostname'], ['ssh-keys']]) {
    const r = await run(args[0]!, ...args.slice(1));
    expect(r.err, args.join(' ')).toBe('');
    expect(r.code, args.join(' ')).toBe(0);
  }
  return { coreos: await readRoot(root, 'run/coreos/metadata'), afterburn: await readRoot(root, 'run/metadata/afterburn') };
}

const envLines = (attrs: Record<string, string>) =>
  Object.keys(attrs)
    .sort()
    .map((k) => `${k}=${attrs[k]}\n`)
    .join('');
const afterburnLines = (name: string, attrs: Record<string, string>) =>
  envLines(Object.fromEntries(Object.entries(attrs).flatMap(([k, v]) => (k.startsWith(`COREOS_${name}_`) ? [[k.replace('COREOS_', 'AFTERBURN_'), v]] : []))));

describe('oem-agent end to end on temporary roots', () => {
  it.runIf(process.getuid?.() === 0)('aliyun: metadata in both formats, hostname, ssh-keys [root]', async () => {
    const root = await makeRoot();
    mock.reset(aliyunRoutes());
    mock.guard = requireAliyunToken;
    const files = await endToEnd((cmd, ...more) => agent(agentArgs(cmd, root, 'aliyun', mock.base, ...more)), root);
    expect(files.coreos).toBe(envLines(ALI_ATTRS));
    expect(files.afterburn).toBe(afterburnLines('ALIYUN', ALI_ATTRS));
    expect(files.afterburn).toContain('AFTERBURN_ALIYUN_INSTANCE_ID=i-bp1h9n3xxxxxxxxxxxxx\n');
    expect(await readRoot(root, 'etc/hostname')).toBe('izbp1h9n3xxxxz\n');
    expect(await readRoot(root, 'home/core/.ssh/authorized_keys.d/coreos-metadata')).toBe(`${KEY.a}\n${KEY.b}\n`);
  });

  it.runIf(process.getuid?.() === 0)('oraclecloud: metadata in both formats, hostname, ssh-keys [root]', async () => {
    const root = await makeRoot();
    mock.reset(ociRoutes());
    mock.guard = requireBearer;
    const files = await endToEnd((cmd, ...more) => agent(agentArgs(cmd, root, 'oraclecloud', mock.base, ...more)), root);
    expect(files.coreos).toBe(envLines(OCI_ATTRS));
    expect(files.afterburn).toBe(afterburnLines('ORACLECLOUD', OCI_ATTRS));
    expect(files.afterburn).toContain('AFTERBURN_ORACLECLOUD_REGION_ID=us-phoenix-1\n');
    expect(await readRoot(root, 'etc/hostname')).toBe('my-hostname\n');
    expect(await readRoot(root, 'home/core/.ssh/authorized_keys.d/coreos-metadata')).toBe(`${KEY.a}\n${KEY.b}\n`);
    // A dead service: a clear error, exit code 1.
    const failed = await agent(agentArgs('metadata', root, 'oraclecloud', dead));
    expect(failed.code).toBe(1);
    expect(failed.err).toMatch(/GET http:\/\/127\.0\.0\.1:\d+\/opc\/v2\/instance\/ failed after 3 attempts/);
  });

  it.runIf(process.getuid?.() === 0)('ibmcloud: from the drive given with --config-drive [root]', async () => {
    const root = await rootWithDrive({ 'meta-data': IBM_META, 'vendor-data': vendorData([KEY.a, KEY.c]), 'user-data': USERDATA });
    const files = await endToEnd((cmd, ...more) => driveCli(cmd, root, 'ibmcloud', ...more), root);
    expect(files.coreos).toBe(envLines(IBM_ATTRS));
    expect(files.afterburn).toBe('AFTERBURN_IBMCLOUD_INSTANCE_ID=0717_2a588fe2-7da2-4321-1234-1199b77d3911\nAFTERBURN_IBMCLOUD_LOCAL_HOSTNAME=test-instance-vpc-gen2\n');
    expect(await readRoot(root, 'etc/hostname')).toBe('test-instance-vpc-gen2\n');
    expect(await readRoot(root, 'home/core/.ssh/authorized_keys.d/coreos-metadata')).toBe(`${KEY.a}\n${KEY.c}\n`);
    // No drive: success, nothing written, a log line.
    const bare = await makeRoot();
    const r = await driveCli('metadata', bare, 'ibmcloud');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`ibmcloud: no config drive at ${DRIVE}`);
    expect(await readRoot(bare, 'run/coreos/metadata')).toBe('');
  });

  it.runIf(process.getuid?.() === 0)('ibmcloud-classic: metadata, hostname, ssh-keys and networkd units [root]', async () => {
    const root = await rootWithDrive({ [`${LATEST}/meta_data.json`]: CLASSIC_META, [`${LATEST}/network_data.json`]: CLASSIC_NET });
    const files = await endToEnd((cmd, ...more) => driveCli(cmd, root, 'ibmcloud-classic', ...more), root);
    expect(files.coreos).toBe(envLines(CLASSIC_ATTRS));
    expect(files.afterburn).toBe(
      'AFTERBURN_IBMCLOUD_CLASSIC_INSTANCE_ID=3c9085db-3eba-4ef2-9d97-d3ffcff6fffe\nAFTERBURN_IBMCLOUD_CLASSIC_LOCAL_HOSTNAME=rh-lbruno-classic01\n',
    );
    expect(await readRoot(root, 'etc/hostname')).toBe('rh-lbruno-classic01\n');
    expect(await readRoot(root, 'home/core/.ssh/authorized_keys.d/coreos-metadata')).toBe(`${KEY.a}\n`);
    const n = await driveCli('network', root, 'ibmcloud-classic');
    expect(n.code).toBe(0);
    for (const u of CLASSIC_UNITS) expect(await readRoot(root, `etc/systemd/network/${u.name}`)).toBe(u.content);
  });

  it.runIf(process.getuid?.() === 0)('powervs: metadata, hostname, ssh-keys [root]', async () => {
    const root = await rootWithDrive({ [`${LATEST}/meta_data.json`]: POWERVS_META });
    const files = await endToEnd((cmd, ...more) => driveCli(cmd, root, 'powervs', ...more), root);
    expect(files.coreos).toBe(envLines(POWERVS_ATTRS));
    expect(files.afterburn).toBe('AFTERBURN_POWERVS_INSTANCE_ID=1c0c0bb6-8dcd-4966-ad80-946b871814f1\nAFTERBURN_POWERVS_LOCAL_HOSTNAME=test-tf-pVM\n');
    expect(await readRoot(root, 'etc/hostname')).toBe('test-tf-pvm\n');
    expect(await readRoot(root, 'home/core/.ssh/authorized_keys.d/coreos-metadata')).toBe(`${KEY.b}\n`);
  });
});
