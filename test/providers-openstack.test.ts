/**
 * The OpenStack-family providers (openstack, rackspace, rackspace-onmetal) against config-drive
 * directories in the documented formats and a mock metadata service on 127.0.0.1.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { networkConfig } from '../oem/providers/openstack-common.js';
import { provider as openstack } from '../oem/providers/openstack.js';
import { provider as onmetal } from '../oem/providers/rackspace-onmetal.js';
import { provider as rackspace } from '../oem/providers/rackspace.js';
import type { ProviderEnv } from '../oem/providers/types.js';

// Real public keys (OpenSSH ssh-keygen), as in ssh-keys.test.ts.
const ED = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIENQF7ZfEWz/nirY09uAuYtaLzkukGx70zg/7N+Yf5/f alice@laptop';
const RSA =
  'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC9lPnVqryTRWw4mvshR/8IZ12K2pCycUlnOjWMs1PLyZQPqI1+ew0wui7j4uK0nfpnCK/if86QNwQC9SqonI5+cZouk1N5EBUH1k3HcVRokBwtcwmLBhtxsYXU3V5I3izjJZd3c750Za7CvpBYNL+UUlfjDiyJuPwm3PqKuxwuApW3e24DggnMBUhxWRwF8zDducWRl+FeShMyUvTbQk2lOcx396fc9fAv78O36xOaFcoAGitwJaVrWk4jJzIs3B0fkWqmm1TpUV0gIdl1wQdmQ1N6YCJhT8FVqdE2WOO3r42XeRW5A3sv6gX1JAnsWEQpmf5dmHbbmrE/q7VUA4zH bob@desk';

const DRIVE = '/media/configdrive';

// --- fixtures in the documented formats -------------------------------------------------------

/** openstack/latest/meta_data.json as Nova writes it. */
const META_DATA = {
  admin_pass: 'Amgkg8aehSeZ',
  availability_zone: 'nova',
  hostname: 'test-vm.novalocal',
  launch_index: 0,
  meta: { role: 'webserver' },
  name: 'test-vm',
  project_id: 'b884b287309140b495821eb8f0f9e30d',
  public_keys: { mykey: `${ED}\n` },
  keys: [
    { name: 'mykey', type: 'ssh', data: `${ED}\n` },
    { name: 'other', type: 'ssh', data: RSA },
  ],
  random_seed: 'FZHvd6YUHwDZUk4KYkVZkYrWHt61L1gGdbeoeefseeUUhmXvqCj9RfzKt9/RdD0DY2Fn48aAOVovSh6I6VtsRScV6ASjC+mpweJX1Jjmh73cjQnEfuN5Yw==',
  uuid: 'f8b406c4-7da1-4d20-8c44-a93dc42308e2',
  devices: [],
};

/** openstack/latest/network_data.json: one static link (IPv4 + routes), one DHCP + static IPv6. */
const NETWORK_DATA = {
  links: [
    { ethernet_mac_address: 'fa:16:3e:60:32:83', id: 'tapf7f00564-60', mtu: null, type: 'ovs', vif_id: 'f7f00564-60c4-4237-b8fb-cb36bb66458a' },
    { ethernet_mac_address: 'FA:16:3E:99:59:C6', id: 'tap68f096f7-81', mtu: 1500, type: 'ovs', vif_id: '68f096f7-8155-4cfc-8b87-dedb565cc2eb' },
    { ethernet_mac_address: 'fa:16:3e:11:22:33', id: 'tap00000000-01', mtu: null, type: 'bridge', vif_id: '00000000-0155-4cfc-8b87-dedb565cc2eb' },
  ],
  networks: [
    {
      id: 'network0',
      ip_address: '10.192.35.66',
      link: 'tapf7f00564-60',
      netmask: '255.255.252.0',
      network_id: 'edbd37df-7fa8-4e34-a411-5edfc29ff3ca',
      routes: [
        { gateway: '10.192.35.254', netmask: '0.0.0.0', network: '0.0.0.0' },
        { gateway: '10.192.35.1', netmask: '255.255.0.0', network: '172.16.0.0' },
      ],
      services: [{ address: '10.255.250.40', type: 'dns' }],
      type: 'ipv4',
    },
    { id: 'network1', link: 'tap68f096f7-81', network_id: 'dd30bcfe-1e79-4839-8982-375a33f8e649', type: 'ipv4_dhcp' },
    {
      id: 'network2',
      ip_address: '2001:db8:9:19:f180:658c:2eeb:520c',
      link: 'tap68f096f7-81',
      netmask: 'ffff:ffff:ffff:ffff::',
      network_id: 'dd30bcfe-1e79-4839-8982-375a33f8e649',
      routes: [{ gateway: '2001:db8:9::1', netmask: '::', network: '::' }],
      services: [],
      type: 'ipv6',
    },
    { id: 'network3', link: 'tap00000000-01', network_id: '5b0a4d8e-8b6f-4b58-a0b1-c0f0c0a0b0c0', type: 'ipv4_dhcp' },
  ],
  services: [
    { address: '8.8.8.8', type: 'dns' },
    { address: '8.8.4.4', type: 'dns' },
  ],
};

const NETWORK_UNITS = [
  {
    name: '30-oem-tapf7f00564-60.network',
    content:
      '[Match]\nMACAddress=fa:16:3e:60:32:83\n\n[Network]\nAddress=10.192.35.66/22\nGateway=10.192.35.254\nDNS=10.255.250.40\nDNS=8.8.8.8\nDNS=8.8.4.4\n\n[Route]\nDestination=172.16.0.0/16\nGateway=10.192.35.1\n',
  },
  {
    name: '30-oem-tap68f096f7-81.network',
    content:
      '[Match]\nMACAddress=fa:16:3e:99:59:c6\n\n[Link]\nMTUBytes=1500\n\n[Network]\nDHCP=ipv4\nAddress=2001:db8:9:19:f180:658c:2eeb:520c/64\nGateway=2001:db8:9::1\nDNS=8.8.8.8\nDNS=8.8.4.4\n',
  },
];

/** The Nova network metadata spec's example: two ports bonded, a VLAN on the bond, a plain VIF. */
const NETWORK_DATA_BOND = {
  links: [
    { id: 'interface2', type: 'vif', ethernet_mac_address: 'a0:36:9f:2c:e8:70', vif_id: 'e1c90e9f-eafc-4e2d-8ec9-58b91cebb53d', mtu: 1500 },
    { id: 'interface0', type: 'phy', ethernet_mac_address: 'a0:36:9f:2c:e8:80', mtu: 9000 },
    { id: 'interface1', type: 'phy', ethernet_mac_address: 'a0:36:9f:2c:e8:81', mtu: 9000 },
    {
      id: 'bond0',
      type: 'bond',
      bond_links: ['interface0', 'interface1'],
      ethernet_mac_address: 'a0:36:9f:2c:e8:82',
      bond_mode: '802.1ad',
      bond_xmit_hash_policy: 'layer3+4',
      bond_miimon: 100,
    },
    { id: 'vlan0', type: 'vlan', vlan_link: 'bond0', vlan_id: 101, vlan_mac_address: 'a0:36:9f:2c:e8:80', neutron_port_id: 'ee2a9db1-e9ad-4f9d-9dab-a0d2c9571fa3' },
  ],
  networks: [
    {
      id: 'private-ipv4',
      type: 'ipv4',
      link: 'interface2',
      ip_address: '10.184.0.244',
      netmask: '255.255.240.0',
      routes: [{ network: '10.0.0.0', netmask: '255.0.0.0', gateway: '11.0.0.1' }],
      network_id: 'da5bb487-5193-4a65-a3df-4a0055a8c0d7',
    },
    {
      id: 'publicnet-ipv4',
      type: 'ipv4',
      link: 'vlan0',
      ip_address: '23.253.157.244',
      netmask: '255.255.255.0',
      dns_nameservers: ['69.20.0.164', '69.20.0.196'],
      routes: [{ network: '0.0.0.0', netmask: '0.0.0.0', gateway: '23.253.157.1' }],
      network_id: '62611d6f-66cb-4270-8b1f-503ef0dd4736',
    },
  ],
  services: [
    { type: 'dns', address: '8.8.8.8' },
    { type: 'dns', address: '8.8.4.4' },
  ],
};

/** OnMetal openstack/<version>/vendor_data.json: two NICs in an LACP bond, public and ServiceNet VLANs. */
const ONMETAL_VENDOR_DATA = {
  network_info: {
    links: [
      { ethernet_mac_address: 'a0:36:9f:5f:a4:a4', mtu: 1500, type: 'ethernet', id: 'eth0', vif_id: null },
      { ethernet_mac_address: 'a0:36:9f:5f:a4:a5', mtu: 1500, type: 'ethernet', id: 'eth1', vif_id: null },
      {
        bond_miimon: 100,
        ethernet_mac_address: 'a0:36:9f:5f:a4:a4',
        bond_links: ['eth0', 'eth1'],
        bond_mode: '802.3ad',
        bond_xmit_hash_policy: 'layer3+4',
        bond_lacp_rate: 'fast',
        mtu: 1500,
        type: 'bond',
        id: 'bond0',
        vif_id: null,
      },
      { vlan_link: 'bond0', ethernet_mac_address: 'a0:36:9f:5f:a4:a4', mtu: 1500, vlan_id: 101, type: 'vlan', id: 'bond0.101', vif_id: '0d8a5a91-0a2f-4c3c-8e4a-0f3c7e3b0a11' },
      { vlan_link: 'bond0', ethernet_mac_address: 'a0:36:9f:5f:a4:a4', mtu: 1500, vlan_id: 401, type: 'vlan', id: 'bond0.401', vif_id: '5e2b8c3a-74b1-4e6c-9d1a-2b7c1f0e9d22' },
    ],
    networks: [
      {
        network_id: '00000000-0000-0000-0000-000000000000',
        ip_address: '23.253.157.244',
        netmask: '255.255.255.0',
        routes: [{ network: '0.0.0.0', netmask: '0.0.0.0', gateway: '23.253.157.1' }],
        type: 'ipv4',
        id: 'publicnet-ipv4',
        link: 'bond0.101',
      },
      {
        network_id: '00000000-0000-0000-0000-000000000000',
        ip_address: '2001:4800:7817:104:be76:4eff:fe04:5a1d',
        netmask: 'ffff:ffff:ffff:ffff::',
        routes: [{ network: '::', netmask: '::', gateway: 'fe80::def' }],
        type: 'ipv6',
        id: 'publicnet-ipv6',
        link: 'bond0.101',
      },
      {
        network_id: '11111111-1111-1111-1111-111111111111',
        ip_address: '10.184.0.244',
        netmask: '255.255.240.0',
        routes: [
          { network: '10.176.0.0', netmask: '255.240.0.0', gateway: '10.184.0.1' },
          { network: '10.208.0.0', netmask: '255.240.0.0', gateway: '10.184.0.1' },
        ],
        type: 'ipv4',
        id: 'servicenet-ipv4',
        link: 'bond0.401',
      },
    ],
    services: [
      { type: 'dns', address: '69.20.0.164' },
      { type: 'dns', address: '69.20.0.196' },
    ],
  },
};

const ONMETAL_UNITS = [
  {
    name: '10-oem-bond0.netdev',
    content:
      '[NetDev]\nName=bond0\nKind=bond\nMACAddress=a0:36:9f:5f:a4:a4\nMTUBytes=1500\n\n[Bond]\nMode=802.3ad\nTransmitHashPolicy=layer3+4\nLACPTransmitRate=fast\nMIIMonitorSec=100ms\n',
  },
  { name: '10-oem-bond0.101.netdev', content: '[NetDev]\nName=bond0.101\nKind=vlan\nMACAddress=a0:36:9f:5f:a4:a4\nMTUBytes=1500\n\n[VLAN]\nId=101\n' },
  { name: '10-oem-bond0.401.netdev', content: '[NetDev]\nName=bond0.401\nKind=vlan\nMACAddress=a0:36:9f:5f:a4:a4\nMTUBytes=1500\n\n[VLAN]\nId=401\n' },
  { name: '20-oem-bond0.network', content: '[Match]\nName=bond0\n\n[Network]\nVLAN=bond0.101\nVLAN=bond0.401\n' },
  {
    name: '20-oem-bond0.101.network',
    content:
      '[Match]\nName=bond0.101\n\n[Network]\nAddress=23.253.157.244/24\nAddress=2001:4800:7817:104:be76:4eff:fe04:5a1d/64\nGateway=23.253.157.1\nGateway=fe80::def\nDNS=69.20.0.164\nDNS=69.20.0.196\n',
  },
  {
    name: '20-oem-bond0.401.network',
    content:
      '[Match]\nName=bond0.401\n\n[Network]\nAddress=10.184.0.244/20\nDNS=69.20.0.164\nDNS=69.20.0.196\n\n[Route]\nDestination=10.176.0.0/12\nGateway=10.184.0.1\n\n[Route]\nDestination=10.208.0.0/12\nGateway=10.184.0.1\n',
  },
  { name: '30-oem-eth0.network', content: '[Match]\nMACAddress=a0:36:9f:5f:a4:a4\n\n[Link]\nMTUBytes=1500\n\n[Network]\nBond=bond0\n' },
  { name: '30-oem-eth1.network', content: '[Match]\nMACAddress=a0:36:9f:5f:a4:a5\n\n[Link]\nMTUBytes=1500\n\n[Network]\nBond=bond0\n' },
];

const USER_DATA = '#cloud-config\nhostname: from-userdata\n';

// --- helpers ----------------------------------------------------------------------------------

let base: string;
let root: string;
let logs: string[];

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'oem-openstack-'));
  root = join(base, 'root');
  await mkdir(root);
  logs = [];
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

/** Writes files (path relative to `dir`, string/Buffer or JSON value). */
async function writeTree(dir: string, files: Record<string, unknown>): Promise<void> {
  for (const [path, value] of Object.entries(files)) {
    const full = join(dir, path);
    await mkdir(dirname(full), { recursive: true });
    await writeFile(full, typeof value === 'string' || Buffer.isBuffer(value) ? value : JSON.stringify(value, null, 2));
  }
}

/** A config drive under the root at DRIVE. */
function drive(files: Record<string, unknown>): Promise<void> {
  return writeTree(join(root, DRIVE), files);
}

function env(overrides: Partial<ProviderEnv> = {}): ProviderEnv {
  return {
    root,
    metadataUrl: service.url,
    configDrive: DRIVE,
    serialDevice: '/dev/null',
    vmtoolsd: ['false'],
    azureDvd: '/media/azure',
    http: { tries: 3, backoffMs: 10, maxBackoffMs: 20, timeoutMs: 2000 },
    log: (line) => logs.push(line),
    ...overrides,
  };
}

// --- mock metadata service ----------------------------------------------------------------------

type Reply = { status: number; body?: string; hang?: boolean };
/** A reply that never comes. */
const HANG: Reply = { status: 0, hang: true };

interface MockService {
  server: Server;
  url: string;
  /** path -> replies in order; the last one repeats. Unknown paths get 404. */
  routes: Map<string, Reply[]>;
  requests: string[];
}

const service = {} as MockService;

beforeAll(async () => {
  service.routes = new Map();
  service.requests = [];
  service.server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '/';
    const seen = service.requests.filter((p) => p === path).length;
    service.requests.push(path);
    const replies = service.routes.get(path);
    const reply: Reply = replies === undefined ? { status: 404 } : (replies[Math.min(seen, replies.length - 1)] ?? { status: 404 });
    if (reply.hang) return; // never answers; the client's timeout must fire
    res.writeHead(reply.status, { 'content-type': 'application/octet-stream' });
    res.end(reply.body ?? '');
  });
  await new Promise<void>((resolve) => service.server.listen(0, '127.0.0.1', resolve));
  service.url = `http://127.0.0.1:${(service.server.address() as AddressInfo).port}`;
});

beforeEach(() => {
  service.routes.clear();
  service.requests = [];
});

afterAll(async () => {
  service.server.closeAllConnections();
  await new Promise<void>((resolve) => service.server.close(() => resolve()));
});

function serve(path: string, ...replies: (Reply | string)[]): void {
  service.routes.set(
    path,
    replies.map((r) => (typeof r === 'string' ? { status: 200, body: r } : r)),
  );
}

/** The documented service layout: OpenStack JSON plus the EC2-style 2009-04-04 tree. */
function serveOpenStack(): void {
  serve('/openstack/latest/meta_data.json', JSON.stringify(META_DATA));
  serve('/openstack/latest/user_data', USER_DATA);
  serve('/openstack/latest/network_data.json', JSON.stringify(NETWORK_DATA));
  serve('/2009-04-04/meta-data/local-ipv4', '10.192.35.66');
  serve('/2009-04-04/meta-data/public-ipv4', '203.0.113.10\n');
  serve('/2009-04-04/meta-data/hostname', 'test-vm.novalocal');
  serve('/2009-04-04/meta-data/instance-id', 'i-0000a1b2');
  serve('/2009-04-04/meta-data/instance-type', 'm1.small');
}

const UNIT_NAME = /^\d\d-oem-[A-Za-z0-9_.-]{1,15}\.(network|netdev)$/;

// --- openstack --------------------------------------------------------------------------------

describe('openstack config drive', () => {
  it('reads meta_data.json, user_data, network_data.json and the EC2 addresses, never the service', async () => {
    serveOpenStack();
    await drive({
      'openstack/latest/meta_data.json': META_DATA,
      'openstack/latest/user_data': USER_DATA,
      'openstack/latest/network_data.json': NETWORK_DATA,
      'openstack/latest/vendor_data.json': {},
      'openstack/2012-08-10/meta_data.json': { uuid: 'old' },
      'ec2/latest/meta-data.json': {
        'local-ipv4': '10.192.35.66',
        'public-ipv4': '203.0.113.10',
        hostname: 'test-vm.novalocal',
        'instance-id': 'i-022da7a2',
        'instance-type': 'm1.small',
      },
    });
    const md = await openstack.metadata(env());
    expect(md.attributes).toEqual({
      COREOS_IPV4_PRIVATE: '10.192.35.66',
      COREOS_IPV4_PUBLIC: '203.0.113.10',
      COREOS_IPV6_PUBLIC: '2001:db8:9:19:f180:658c:2eeb:520c',
      COREOS_HOSTNAME: 'test-vm.novalocal',
      COREOS_OPENSTACK_INSTANCE_UUID: 'f8b406c4-7da1-4d20-8c44-a93dc42308e2',
      COREOS_OPENSTACK_AVAILABILITY_ZONE: 'nova',
      // Afterburn's openstack attributes: meta_data.json's hostname, the EC2 data's id, type and addresses.
      COREOS_OPENSTACK_HOSTNAME: 'test-vm.novalocal',
      COREOS_OPENSTACK_INSTANCE_ID: 'i-022da7a2',
      COREOS_OPENSTACK_INSTANCE_TYPE: 'm1.small',
      COREOS_OPENSTACK_IPV4_LOCAL: '10.192.35.66',
      COREOS_OPENSTACK_IPV4_PUBLIC: '203.0.113.10',
    });
    expect(md.hostname).toBe('test-vm.novalocal');
    expect(md.sshKeys).toEqual([ED, RSA]);
    expect(md.networkUnits).toEqual(NETWORK_UNITS);
    expect((await openstack.userdata(env()))?.toString()).toBe(USER_DATA);
    expect(service.requests).toEqual([]);
  });

  it('turns bonds and VLANs (the Nova spec example) into netdevs and networks', async () => {
    await drive({ 'openstack/latest/meta_data.json': { uuid: 'u-1' }, 'openstack/latest/network_data.json': NETWORK_DATA_BOND });
    const md = await openstack.metadata(env());
    expect(md.networkUnits).toEqual([
      {
        name: '10-oem-bond0.netdev',
        content: '[NetDev]\nName=bond0\nKind=bond\nMACAddress=a0:36:9f:2c:e8:82\n\n[Bond]\nMode=802.3ad\nTransmitHashPolicy=layer3+4\nMIIMonitorSec=100ms\n',
      },
      { name: '10-oem-vlan0.netdev', content: '[NetDev]\nName=vlan0\nKind=vlan\nMACAddress=a0:36:9f:2c:e8:80\n\n[VLAN]\nId=101\n' },
      { name: '20-oem-bond0.network', content: '[Match]\nName=bond0\n\n[Network]\nVLAN=vlan0\n' },
      {
        name: '20-oem-vlan0.network',
        content: '[Match]\nName=vlan0\n\n[Network]\nAddress=23.253.157.244/24\nGateway=23.253.157.1\nDNS=69.20.0.164\nDNS=69.20.0.196\nDNS=8.8.8.8\nDNS=8.8.4.4\n',
      },
      {
        name: '30-oem-interface2.network',
        content:
          '[Match]\nMACAddress=a0:36:9f:2c:e8:70\n\n[Link]\nMTUBytes=1500\n\n[Network]\nAddress=10.184.0.244/20\nDNS=8.8.8.8\nDNS=8.8.4.4\n\n[Route]\nDestination=10.0.0.0/8\nGateway=11.0.0.1\n',
      },
      { name: '30-oem-interface0.network', content: '[Match]\nMACAddress=a0:36:9f:2c:e8:80\n\n[Link]\nMTUBytes=9000\n\n[Network]\nBond=bond0\n' },
      { name: '30-oem-interface1.network', content: '[Match]\nMACAddress=a0:36:9f:2c:e8:81\n\n[Link]\nMTUBytes=9000\n\n[Network]\nBond=bond0\n' },
    ]);
    // No EC2 data on this drive: the static addresses stand in.
    expect(md.attributes).toEqual({
      COREOS_OPENSTACK_INSTANCE_UUID: 'u-1',
      COREOS_IPV4_PRIVATE: '10.184.0.244',
      COREOS_IPV4_PUBLIC: '23.253.157.244',
    });
    expect(md.hostname).toBeUndefined();
  });

  it('DHCP-only networks need no units', async () => {
    await drive({
      'openstack/latest/meta_data.json': META_DATA,
      'openstack/latest/network_data.json': {
        links: [{ ethernet_mac_address: 'fa:16:3e:9c:bf:3d', id: 'tapcd9f6d46-4a', mtu: null, type: 'bridge', vif_id: 'cd9f6d46-4a3a-43ab-a466-994af9db96fc' }],
        networks: [{ id: 'network0', link: 'tapcd9f6d46-4a', network_id: '99e88329-f20d-4741-9593-25bf07847b16', type: 'ipv4_dhcp' }],
        services: [{ address: '8.8.8.8', type: 'dns' }],
      },
    });
    expect((await openstack.metadata(env())).networkUnits).toEqual([]);
  });

  it('an empty user_data is no userdata; a missing one too', async () => {
    await drive({ 'openstack/latest/meta_data.json': META_DATA, 'openstack/latest/user_data': '' });
    expect(await openstack.userdata(env())).toBeNull();
    await rm(join(root, DRIVE, 'openstack/latest/user_data'));
    expect(await openstack.userdata(env())).toBeNull();
    expect(service.requests).toEqual([]);
  });

  it('keeps userdata bytes exactly (binary, gzip)', async () => {
    const bytes = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xff, 0x00, 0x0a, 0x0d]);
    await drive({ 'openstack/latest/meta_data.json': META_DATA, 'openstack/latest/user_data': bytes });
    expect(await openstack.userdata(env())).toEqual(bytes);
  });

  it('reads garbage JSON as absent, with a log line', async () => {
    await drive({
      'openstack/latest/meta_data.json': '{"uuid": "abc", ',
      'openstack/latest/network_data.json': '[1, 2, 3]',
      'openstack/latest/user_data': USER_DATA,
    });
    const md = await openstack.metadata(env());
    expect(md).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logs.some((l) => l.includes('meta_data.json: not valid JSON'))).toBe(true);
    expect(logs.some((l) => l.includes('network_data.json: not a JSON object'))).toBe(true);
    expect((await openstack.userdata(env()))?.toString()).toBe(USER_DATA);
    expect(service.requests).toEqual([]);
  });

  it('refuses files over the size limits', async () => {
    await drive({
      'openstack/latest/meta_data.json': JSON.stringify({ uuid: 'u', pad: 'x'.repeat(1024 * 1024) }),
      'openstack/latest/user_data': Buffer.alloc(16 * 1024 * 1024 + 1, 0x61),
    });
    expect((await openstack.metadata(env())).attributes).toEqual({});
    expect(await openstack.userdata(env())).toBeNull();
    expect(logs.filter((l) => l.includes('is larger than') && l.endsWith('; ignored'))).toHaveLength(2);
  });

  it('takes the newest dated directory when there is no latest, and follows symlinks within the root', async () => {
    await drive({
      'openstack/2012-08-10/meta_data.json': { uuid: 'old', hostname: 'old' },
      'openstack/2013-10-17/meta_data.json': { uuid: 'new', hostname: 'new' },
      'openstack/2013-10-17/data/user_data': USER_DATA,
      'openstack/content/0000': 'auto lo\n',
    });
    await symlink('data/user_data', join(root, DRIVE, 'openstack/2013-10-17/user_data'));
    const md = await openstack.metadata(env());
    expect(md.attributes.COREOS_OPENSTACK_INSTANCE_UUID).toBe('new');
    expect(md.hostname).toBe('new');
    expect((await openstack.userdata(env()))?.toString()).toBe(USER_DATA);
  });
});

describe('openstack metadata service', () => {
  it('is used when there is no config drive', async () => {
    serveOpenStack();
    const md = await openstack.metadata(env());
    expect(md.attributes).toEqual({
      COREOS_IPV4_PRIVATE: '10.192.35.66',
      COREOS_IPV4_PUBLIC: '203.0.113.10',
      COREOS_IPV6_PUBLIC: '2001:db8:9:19:f180:658c:2eeb:520c',
      COREOS_HOSTNAME: 'test-vm.novalocal',
      COREOS_OPENSTACK_INSTANCE_UUID: 'f8b406c4-7da1-4d20-8c44-a93dc42308e2',
      COREOS_OPENSTACK_AVAILABILITY_ZONE: 'nova',
      // Afterburn's openstack-metadata attributes, from the EC2-style tree.
      COREOS_OPENSTACK_HOSTNAME: 'test-vm.novalocal',
      COREOS_OPENSTACK_INSTANCE_ID: 'i-0000a1b2',
      COREOS_OPENSTACK_INSTANCE_TYPE: 'm1.small',
      COREOS_OPENSTACK_IPV4_LOCAL: '10.192.35.66',
      COREOS_OPENSTACK_IPV4_PUBLIC: '203.0.113.10',
    });
    expect(md.hostname).toBe('test-vm.novalocal');
    expect(md.sshKeys).toEqual([ED, RSA]);
    expect(md.networkUnits).toEqual(NETWORK_UNITS);
    expect((await openstack.userdata(env()))?.toString()).toBe(USER_DATA);
    expect(logs.some((l) => l.includes('no config drive'))).toBe(true);
  });

  it('is used when the directory exists but has no openstack/ tree', async () => {
    serveOpenStack();
    await drive({ 'ec2/latest/meta-data.json': { 'local-ipv4': '192.0.2.1' } });
    expect((await openstack.metadata(env())).attributes.COREOS_OPENSTACK_INSTANCE_UUID).toBe(META_DATA.uuid);
  });

  it('takes 404 as absent', async () => {
    const md = await openstack.metadata(env());
    expect(md).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await openstack.userdata(env())).toBeNull();
    // 404 is an answer: no retries.
    expect(new Set(service.requests).size).toBe(service.requests.length);
  });

  it('retries a 500 and then takes the 200', async () => {
    serve('/openstack/latest/meta_data.json', { status: 500 }, JSON.stringify(META_DATA));
    serve('/openstack/latest/user_data', { status: 503 }, { status: 502 }, USER_DATA);
    serve('/2009-04-04/meta-data/local-ipv4', { status: 500 }, '10.0.0.5');
    const md = await openstack.metadata(env());
    expect(md.attributes.COREOS_OPENSTACK_INSTANCE_UUID).toBe(META_DATA.uuid);
    expect(md.attributes.COREOS_IPV4_PRIVATE).toBe('10.0.0.5');
    expect((await openstack.userdata(env()))?.toString()).toBe(USER_DATA);
    expect(service.requests.filter((p) => p === '/openstack/latest/meta_data.json')).toHaveLength(2);
    expect(service.requests.filter((p) => p === '/openstack/latest/user_data')).toHaveLength(3);
    expect(logs.some((l) => l.includes('meta_data.json failed (attempt 1/3): HTTP 500'))).toBe(true);
  });

  it('gives up after env.http.tries and says why', async () => {
    serve('/openstack/latest/meta_data.json', { status: 500 });
    serve('/openstack/latest/user_data', { status: 500 });
    await expect(openstack.metadata(env())).rejects.toThrow(/meta_data\.json failed after 3 attempts: HTTP 500/);
    await expect(openstack.userdata(env())).rejects.toThrow(/user_data failed after 3 attempts: HTTP 500/);
    expect(service.requests.filter((p) => p === '/openstack/latest/meta_data.json')).toHaveLength(3);
  });

  it('times out a request that hangs and tries again', async () => {
    serve('/openstack/latest/user_data', HANG, USER_DATA);
    const started = Date.now();
    expect((await openstack.userdata(env({ http: { tries: 3, backoffMs: 10, maxBackoffMs: 20, timeoutMs: 300 } })))?.toString()).toBe(USER_DATA);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(logs.some((l) => l.includes('timed out after 300 ms'))).toBe(true);
  });

  it('refuses a meta_data.json that is not JSON; skips a bad network_data.json and bad EC2 values', async () => {
    serve('/openstack/latest/meta_data.json', '<html>Service Unavailable</html>');
    await expect(openstack.metadata(env())).rejects.toThrow(/meta_data\.json is not a JSON object/);
    serve('/openstack/latest/meta_data.json', JSON.stringify({ uuid: 'u-2' }));
    serve('/openstack/latest/network_data.json', '{"links": ');
    serve('/2009-04-04/meta-data/local-ipv4', '10.1.2.3');
    serve('/2009-04-04/meta-data/public-ipv4', 'not-an-ip');
    serve('/2009-04-04/meta-data/hostname', 'VM-7.example.org');
    const md = await openstack.metadata(env());
    expect(md).toEqual({
      attributes: {
        COREOS_IPV4_PRIVATE: '10.1.2.3',
        COREOS_HOSTNAME: 'vm-7.example.org',
        COREOS_OPENSTACK_INSTANCE_UUID: 'u-2',
        // The platform's spelling, as Afterburn writes it.
        COREOS_OPENSTACK_HOSTNAME: 'VM-7.example.org',
        COREOS_OPENSTACK_IPV4_LOCAL: '10.1.2.3',
      },
      hostname: 'vm-7.example.org',
      sshKeys: [],
      networkUnits: [],
    });
    expect(logs.some((l) => l.includes('network_data.json: not valid JSON'))).toBe(true);
    expect(logs.some((l) => l.includes('ignoring the public-ipv4 "not-an-ip"'))).toBe(true);
  });

  it('takes the keys from the EC2-style public-keys when meta_data.json has none, by index only', async () => {
    serve('/openstack/latest/meta_data.json', JSON.stringify({ uuid: 'u-3', hostname: 'from-meta' }));
    serve('/2009-04-04/meta-data/public-keys/', '0=mykey\n../1=evil\n2=other\n3=broken');
    serve('/2009-04-04/meta-data/public-keys/0/openssh-key', `${ED}\n`);
    serve('/2009-04-04/meta-data/public-keys/2/openssh-key', RSA);
    serve('/2009-04-04/meta-data/public-keys/3/openssh-key', 'ssh-rsa not*base64 x');
    const md = await openstack.metadata(env());
    expect(md.sshKeys).toEqual([ED, RSA]);
    expect(service.requests.filter((p) => p.includes('public-keys'))).toEqual([
      '/2009-04-04/meta-data/public-keys/',
      '/2009-04-04/meta-data/public-keys/0/openssh-key',
      '/2009-04-04/meta-data/public-keys/2/openssh-key',
      '/2009-04-04/meta-data/public-keys/3/openssh-key',
    ]);
    expect(logs.some((l) => l.includes('"../1=evil"'))).toBe(true);
    expect(logs.some((l) => l.startsWith('ignoring an invalid SSH key'))).toBe(true);
    // No EC2 hostname: meta_data.json's is the hostname attribute. Missing id and type: none.
    expect(md.attributes.COREOS_OPENSTACK_HOSTNAME).toBe('from-meta');
    expect(md.attributes.COREOS_OPENSTACK_INSTANCE_ID).toBeUndefined();
    expect(md.attributes.COREOS_OPENSTACK_INSTANCE_TYPE).toBeUndefined();
    // With keys in meta_data.json the EC2 list is not asked for.
    service.requests = [];
    serveOpenStack();
    expect((await openstack.metadata(env())).sshKeys).toEqual([ED, RSA]);
    expect(service.requests.filter((p) => p.includes('public-keys'))).toEqual([]);
  });

  it("drops hostile values of Afterburn's attributes (service and drive)", async () => {
    serve('/openstack/latest/meta_data.json', JSON.stringify({ uuid: 'u-4' }));
    serve('/2009-04-04/meta-data/instance-id', 'i-1\nCOREOS_IPV4_PUBLIC=6.6.6.6');
    serve('/2009-04-04/meta-data/instance-type', 'm1 "small"');
    serve('/2009-04-04/meta-data/hostname', 'evil\nhost');
    serve('/2009-04-04/meta-data/local-ipv4', '10.1.2.3; reboot');
    const md = await openstack.metadata(env());
    expect(md.attributes).toEqual({ COREOS_OPENSTACK_INSTANCE_UUID: 'u-4' });
    expect(logs.some((l) => l.includes('the instance-id "i-1\\nCOREOS_IPV4_PUBLIC=6.6.6.6"') && l.includes('not a plain value'))).toBe(true);
    expect(logs.some((l) => l.includes('the instance-type "m1 \\"small\\""'))).toBe(true);
    logs.length = 0;
    await drive({
      'openstack/latest/meta_data.json': { uuid: 'u-5', hostname: '../../etc/passwd' },
      'ec2/latest/meta-data.json': { 'instance-id': ['i-1'], 'instance-type': 'm1.small\u0000', 'local-ipv4': '999.1.2.3' },
    });
    const d = await openstack.metadata(env());
    expect(d.attributes).toEqual({ COREOS_OPENSTACK_INSTANCE_UUID: 'u-5' });
    expect(logs.some((l) => l.includes('the instance-id "i-1"') && l.includes('not a plain value'))).toBe(true);
    expect(logs.some((l) => l.includes('the instance-type "m1.small\\u0000"'))).toBe(true);
    expect(logs.some((l) => l.includes('the local-ipv4 "999.1.2.3"'))).toBe(true);
  });

  it('goes on without network_data.json and the EC2 values when only they fail', async () => {
    serve('/openstack/latest/meta_data.json', JSON.stringify(META_DATA));
    serve('/openstack/latest/network_data.json', { status: 500 });
    serve('/2009-04-04/meta-data/local-ipv4', { status: 403 });
    const md = await openstack.metadata(env());
    expect(md.attributes.COREOS_OPENSTACK_INSTANCE_UUID).toBe(META_DATA.uuid);
    expect(md.networkUnits).toEqual([]);
    expect(logs.some((l) => l.includes('network_data.json failed after 3 attempts: HTTP 500') && l.includes('going on without it'))).toBe(true);
    expect(logs.some((l) => l.includes('local-ipv4 failed: HTTP 403'))).toBe(true);
  });
});

// --- hostile input ----------------------------------------------------------------------------

describe('hostile values', () => {
  it('drops a hostname with a newline, bad keys and values, and uses no name from metadata as a path', async () => {
    await drive({
      'openstack/latest/meta_data.json': {
        uuid: 'abc\nCOREOS_IPV4_PUBLIC=6.6.6.6',
        availability_zone: 'zone "a"',
        hostname: 'evil\nCOREOS_IPV4_PUBLIC=6.6.6.6',
        name: 'also bad/name',
        public_keys: {
          '../../../etc/cron.d/pwn': ED,
          bad: 'ssh-rsa not*base64 x',
          priv: '-----BEGIN OPENSSH PRIVATE KEY-----\nxxx\n-----END OPENSSH PRIVATE KEY-----\n',
          num: 42,
        },
      },
    });
    const md = await openstack.metadata(env());
    expect(md).toEqual({ attributes: {}, sshKeys: [ED], networkUnits: [] });
    expect(logs.some((l) => l.includes('"evil\\nCOREOS_IPV4_PUBLIC=6.6.6.6": it contains control characters'))).toBe(true);
    expect(logs.some((l) => l.includes('the uuid "abc\\nCOREOS_IPV4_PUBLIC=6.6.6.6"') && l.includes('not a plain value'))).toBe(true);
    expect(logs.some((l) => l.includes('public key "bad"') && l.includes('not valid base64'))).toBe(true);
    expect(logs.some((l) => l.includes('public key "priv"') && l.includes('private key'))).toBe(true);
    expect(logs.some((l) => l.includes('public key "num"') && l.includes('not a string'))).toBe(true);
    expect(logs.every((l) => !l.includes('\n'))).toBe(true);
  });

  it('skips links with unusable interface names, and never makes a unit name from them', async () => {
    await drive({
      'openstack/latest/meta_data.json': { uuid: 'u' },
      'openstack/latest/network_data.json': {
        links: [
          { id: '../', type: 'bond', bond_links: ['eth0'], bond_mode: 'active-backup' },
          { id: '../../etc/systemd/system/x', type: 'vlan', vlan_link: 'eth0', vlan_id: 5 },
          { id: 'v1', type: 'vlan', vlan_link: '../', vlan_id: 6 },
          { id: 'v2', type: 'vlan', vlan_link: 'v1', vlan_id: 7 },
          { id: 'eth0', type: 'phy', ethernet_mac_address: '52:54:00:12:34:56' },
          { id: '..', type: 'phy' },
          { id: '../..', type: 'phy', ethernet_mac_address: '52:54:00:12:34:57' },
          { id: 'eth2', type: 'phy', ethernet_mac_address: '52:54:00:12:34:58\n[Network]' },
          { id: 'averyveryverylongname', type: 'bond', bond_links: [] },
        ],
        networks: [
          { id: 'n0', type: 'ipv4', link: '../', ip_address: '192.0.2.10', netmask: '255.255.255.0' },
          { id: 'n1', type: 'ipv4', link: '../..', ip_address: '192.0.2.11', netmask: '255.255.255.0' },
          { id: 'n2', type: 'ipv4', link: 'eth0', ip_address: '192.0.2.12\nDNS=1.1.1.1', netmask: '255.255.255.0' },
          { id: 'n3', type: 'ipv4', link: 'eth0', ip_address: '192.0.2.13', netmask: '255.0.255.0' },
          { id: 'n4', type: 'ipv4', link: 'eth0', ip_address: '192.0.2.14', netmask: '255.255.255.0', routes: [{ network: '0.0.0.0', netmask: '0.0.0.0', gateway: '1.1.1.1\n[Match]' }] },
        ],
        services: [{ type: 'dns', address: '8.8.8.8\nDNS=6.6.6.6' }],
      },
    });
    const md = await openstack.metadata(env());
    expect(md.networkUnits).toEqual([
      { name: '30-oem-eth0.network', content: '[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nAddress=192.0.2.14/24\n' },
      // A MAC-matched port whose id is no interface name keeps its unit, under a made-up name.
      { name: '30-oem-link6.network', content: '[Match]\nMACAddress=52:54:00:12:34:57\n\n[Network]\nAddress=192.0.2.11/24\n' },
    ]);
    for (const unit of md.networkUnits) expect(unit.name).toMatch(UNIT_NAME);
    for (const id of ['"../"', '"../../etc/systemd/system/x"', '"averyveryverylongname"', '".."']) {
      expect(logs.some((l) => l.includes(id) && l.includes('skipped'))).toBe(true);
    }
    expect(logs.some((l) => l.includes('vlan v2: parent "v1" is not a usable link; skipped'))).toBe(true);
    expect(logs.some((l) => l.includes('routes[0] is not a usable ipv4 route'))).toBe(true);
  });

  it('never follows a symlink out of the root', async () => {
    const outside = join(base, 'outside');
    await writeTree(outside, {
      secret: 'SECRET',
      'openstack/latest/meta_data.json': { uuid: 'outside', public_keys: { k: RSA } },
      'openstack/latest/user_data': 'SECRET',
    });
    await drive({ 'openstack/latest/vendor_data.json': {} });
    const latest = join(root, DRIVE, 'openstack/latest');
    // Relative, climbing above the root; absolute, naming the host path.
    await symlink('../'.repeat(12) + 'outside/secret', join(latest, 'meta_data.json'));
    await symlink(join(outside, 'secret'), join(latest, 'user_data'));
    await symlink('../../../../../../../../../../../../outside/openstack/latest/network_data.json', join(latest, 'network_data.json'));
    const md = await openstack.metadata(env());
    expect(md).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await openstack.userdata(env())).toBeNull();
    expect(logs.join('\n')).not.toContain('SECRET');
    expect(service.requests).toEqual([]);
  });

  it('keeps links inside the drive from reaching the rest of the system', async () => {
    await writeTree(root, { 'etc/shadow': 'root:SECRET:::' });
    await drive({ 'openstack/latest/vendor_data.json': {} });
    const latest = join(root, DRIVE, 'openstack/latest');
    await symlink('/etc/shadow', join(latest, 'user_data'));
    await symlink('../../../../etc/shadow', join(latest, 'meta_data.json'));
    expect(await openstack.userdata(env())).toBeNull();
    expect(await openstack.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    // The same names inside the drive are what the links reach.
    await writeTree(join(root, DRIVE), { 'etc/shadow': JSON.stringify({ uuid: 'drive-shadow' }) });
    expect((await openstack.metadata(env())).attributes).toEqual({ COREOS_OPENSTACK_INSTANCE_UUID: 'drive-shadow' });
  });

  it('follows a config drive path that is a symlink within the root', async () => {
    await writeTree(join(root, 'run/cd'), { 'openstack/latest/meta_data.json': { uuid: 'linked' }, 'openstack/latest/user_data': USER_DATA });
    await mkdir(join(root, 'media'));
    await symlink('../run/cd', join(root, DRIVE));
    expect((await rackspace.metadata(env())).attributes).toEqual({ COREOS_OPENSTACK_INSTANCE_UUID: 'linked' });
    expect((await rackspace.userdata(env()))?.toString()).toBe(USER_DATA);
  });

  it('treats a config drive that is a symlink out of the root as missing', async () => {
    const outside = join(base, 'outside');
    await writeTree(outside, { 'openstack/latest/meta_data.json': { uuid: 'outside' }, 'openstack/latest/user_data': 'SECRET' });
    await mkdir(join(root, 'media'), { recursive: true });
    await symlink(outside, join(root, DRIVE));
    expect(await onmetal.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await onmetal.userdata(env())).toBeNull();
    // openstack falls back to the service, which has nothing.
    expect(await openstack.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await openstack.userdata(env())).toBeNull();
  });

  it('logs and ignores a symlink loop on the drive or on the way to it', async () => {
    await drive({ 'openstack/latest/vendor_data.json': {} });
    await symlink('meta_data.json', join(root, DRIVE, 'openstack/latest/meta_data.json'));
    expect(await openstack.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logs.some((l) => l.includes('too many levels of symlinks') && l.endsWith('; ignored'))).toBe(true);
    logs.length = 0;
    await rm(join(root, DRIVE), { recursive: true });
    await symlink(DRIVE.split('/').pop()!, join(root, DRIVE));
    expect(await onmetal.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logs.some((l) => l.includes('too many levels of symlinks') && l.endsWith('; ignored'))).toBe(true);
  });

  it('refuses a directory where a file should be', async () => {
    await drive({ 'openstack/latest/meta_data.json/x': 'dir', 'openstack/latest/user_data/y': 'dir' });
    expect(await openstack.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await openstack.userdata(env())).toBeNull();
    expect(logs.some((l) => l.includes('not a regular file'))).toBe(true);
  });
});

// --- rackspace-onmetal ------------------------------------------------------------------------

describe('rackspace-onmetal', () => {
  const META = {
    uuid: 'a1b2c3d4-e5f6-4a5b-8c7d-9e0f1a2b3c4d',
    availability_zone: 'IAD',
    hostname: 'onmetal-io1',
    name: 'onmetal-io1',
    public_keys: { rax: RSA },
    launch_index: 0,
    meta: { build_config: '', 'rax:reboot_window': '' },
    files: [],
  };

  it('reads the newest version directory, vendor_data.json network_info with a bond and VLANs', async () => {
    serveOpenStack();
    await drive({
      'openstack/2012-08-10/meta_data.json': { uuid: 'old', hostname: 'old' },
      'openstack/2013-04-04/meta_data.json': { uuid: 'older', hostname: 'older' },
      'openstack/2013-10-17/meta_data.json': META,
      'openstack/2013-10-17/vendor_data.json': ONMETAL_VENDOR_DATA,
      'openstack/2013-10-17/user_data': USER_DATA,
      'openstack/content/0000': 'auto lo\n',
    });
    const md = await onmetal.metadata(env());
    expect(md.attributes).toEqual({
      COREOS_IPV4_PUBLIC: '23.253.157.244',
      COREOS_IPV6_PUBLIC: '2001:4800:7817:104:be76:4eff:fe04:5a1d',
      COREOS_IPV4_PRIVATE: '10.184.0.244',
      COREOS_HOSTNAME: 'onmetal-io1',
      COREOS_OPENSTACK_INSTANCE_UUID: META.uuid,
      COREOS_OPENSTACK_AVAILABILITY_ZONE: 'IAD',
    });
    expect(md.hostname).toBe('onmetal-io1');
    expect(md.sshKeys).toEqual([RSA]);
    expect(md.networkUnits).toEqual(ONMETAL_UNITS);
    expect((await onmetal.userdata(env()))?.toString()).toBe(USER_DATA);
    expect(service.requests).toEqual([]);
  });

  it('prefers latest, and takes the name when there is no hostname', async () => {
    const { hostname: _, ...noHostname } = META;
    await drive({
      'openstack/latest/meta_data.json': { ...noHostname, name: 'onmetal-by-name' },
      'openstack/latest/vendor_data.json': ONMETAL_VENDOR_DATA,
      'openstack/2013-10-17/meta_data.json': META,
    });
    const md = await onmetal.metadata(env());
    expect(md.hostname).toBe('onmetal-by-name');
    expect(md.networkUnits).toEqual(ONMETAL_UNITS);
  });

  it('falls back to network_data.json when vendor_data.json has no network_info', async () => {
    await drive({
      'openstack/latest/meta_data.json': META,
      'openstack/latest/vendor_data.json': { 'cloud-init': '#cloud-config\n' },
      'openstack/latest/network_data.json': ONMETAL_VENDOR_DATA.network_info,
    });
    expect((await onmetal.metadata(env())).networkUnits).toEqual(ONMETAL_UNITS);
  });

  it('has nothing without a config drive, and asks no service', async () => {
    serveOpenStack();
    expect(await onmetal.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await onmetal.userdata(env())).toBeNull();
    expect(service.requests).toEqual([]);
  });

  it('skips an OnMetal link named ../ and what hangs off it', async () => {
    const info = JSON.parse(JSON.stringify(ONMETAL_VENDOR_DATA.network_info)) as { links: Record<string, unknown>[] };
    info.links[2]!.id = '../';
    info.links[3]!.vlan_link = '../';
    info.links[4]!.vlan_link = '../';
    const { units } = networkConfig(info, 'vendor_data.json', (l) => logs.push(l));
    expect(units).toEqual([]);
    expect(logs).toContain('vendor_data.json: bond "../" is not a valid interface name; skipped');
  });
});

// --- rackspace --------------------------------------------------------------------------------

describe('rackspace', () => {
  it('reads the config drive like openstack', async () => {
    await drive({
      'openstack/latest/meta_data.json': META_DATA,
      'openstack/latest/user_data': USER_DATA,
      'openstack/latest/network_data.json': NETWORK_DATA,
    });
    const md = await rackspace.metadata(env());
    expect(md.attributes).toEqual({
      COREOS_IPV4_PRIVATE: '10.192.35.66',
      COREOS_IPV6_PUBLIC: '2001:db8:9:19:f180:658c:2eeb:520c',
      COREOS_HOSTNAME: 'test-vm.novalocal',
      COREOS_OPENSTACK_INSTANCE_UUID: META_DATA.uuid,
      COREOS_OPENSTACK_AVAILABILITY_ZONE: 'nova',
    });
    expect(md.sshKeys).toEqual([ED, RSA]);
    expect(md.networkUnits).toEqual(NETWORK_UNITS);
    expect((await rackspace.userdata(env()))?.toString()).toBe(USER_DATA);
  });

  it('does not fall back to the metadata service', async () => {
    serveOpenStack();
    expect(await rackspace.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await rackspace.userdata(env())).toBeNull();
    expect(service.requests).toEqual([]);
  });
});
