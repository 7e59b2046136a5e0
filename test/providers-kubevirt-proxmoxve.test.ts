/**
 * The kubevirt and proxmoxve providers against cloud-init drives (directories under temporary
 * roots) in the layouts the platforms write: KubeVirt's config-2 and NoCloud disks, Proxmox VE's
 * cidata drive. Modules directly, then the agent CLI end to end.
 */
import { mkdir, readFile, readdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { defaultEnv } from '../oem/providers/index.js';
import { provider as kubevirt } from '../oem/providers/kubevirt.js';
import { provider as proxmoxve } from '../oem/providers/proxmoxve.js';
import type { Metadata, ProviderEnv } from '../oem/providers/types.js';
import { agent, edKey, keyBody, useWorkDir } from './helpers/metadata-mock.js';

const DRIVE = '/media/configdrive';
const KEY_A = edKey('alice@laptop');
const KEY_B = edKey('bob@desk');
const HEAD = (src: string) => `# Written by oem-agent from ${src}.\n`;
const KV = HEAD('the KubeVirt cloud-init disk');
const PVE = HEAD('the Proxmox VE cloud-init drive');

const { work, logs, log, makeRoot } = useWorkDir('oem-kv-pve-');
let root: string;

beforeEach(async () => {
  root = await makeRoot();
});

function env(overrides: Partial<ProviderEnv> = {}): ProviderEnv {
  return defaultEnv({ root, configDrive: DRIVE, log, ...overrides });
}

/** Files on the drive (path relative to it): strings as they are, other values as JSON. */
async function drive(files: Record<string, unknown>, dir = join(root, DRIVE)): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [path, value] of Object.entries(files)) {
    const full = join(dir, path);
    await mkdir(dirname(full), { recursive: true });
    await writeFile(full, typeof value === 'string' || Buffer.isBuffer(value) ? value : JSON.stringify(value, null, 2));
  }
}

const logged = (text: string) => logs.some((l) => l.includes(text));
const allText = (md: Metadata) => JSON.stringify(md);

// --- KubeVirt fixtures ----------------------------------------------------------------------------

/** openstack/latest/meta_data.json as KubeVirt writes it (cloudInitConfigDrive). */
const CD_META = {
  uuid: '5d307ca9-b3ef-428c-8861-06e72d69f223',
  hostname: 'vm1.example.com',
  instance_type: 'u1.medium',
  devices: [],
  public_keys: { mykey: KEY_A, other: KEY_B },
};

/** network_data.json: a static link (by name), a DHCP link (by name), a DHCP link by MAC only. */
const CD_NETWORK = {
  links: [
    { id: 'eth0', type: 'phy', name: 'eth0' },
    { id: 'eth1', type: 'phy', name: 'eth1' },
    { id: 'eth2', type: 'phy', ethernet_mac_address: '06:AA:BB:CC:DD:02' },
    { id: 'eth3', type: 'phy', name: 'eth3' },
  ],
  networks: [
    {
      id: 'network0',
      type: 'ipv4',
      link: 'eth0',
      ip_address: '192.168.1.10',
      netmask: '255.255.255.0',
      routes: [
        { network: '0.0.0.0', netmask: '0.0.0.0', gateway: '192.168.1.1' },
        { network: '10.0.0.0', netmask: '255.0.0.0', gateway: '192.168.1.254' },
      ],
    },
    { id: 'network0v6', type: 'ipv6', link: 'eth0', ip_address: '2001:db8::10', netmask: 'ffff:ffff:ffff:ffff::', routes: [{ network: '::', netmask: '::', gateway: '2001:db8::1' }] },
    { id: 'network1', type: 'ipv4_dhcp', link: 'eth1' },
    { id: 'network1v6', type: 'ipv6_dhcp', link: 'eth1' },
    { id: 'network2', type: 'ipv4_dhcp', link: 'eth2' },
    // DHCP for the address, but the gateway and DNS configured here (accept_dhcp_option).
    { id: 'network3', type: 'ipv4_dhcp', link: 'eth3', accept_dhcp_option: ['subnet_mask'], routes: [{ network: '0.0.0.0', netmask: '0.0.0.0', gateway: '192.168.3.1' }] },
  ],
  services: [
    { type: 'dns', address: '8.8.8.8' },
    { type: 'dns', address: '8.8.4.4' },
    { type: 'dns', address: '2001:4860:4860::8888' },
  ],
};

const DNS3 = 'DNS=8.8.8.8\nDNS=8.8.4.4\nDNS=2001:4860:4860::8888\n';
const CD_UNITS = [
  {
    name: '10-oem-0-eth0.network',
    content: `${KV}[Match]\nName=eth0\n\n[Network]\nAddress=192.168.1.10/24\nAddress=2001:db8::10/64\nGateway=192.168.1.1\nGateway=2001:db8::1\n${DNS3}\n[Route]\nDestination=10.0.0.0/8\nGateway=192.168.1.254\n`,
  },
  { name: '10-oem-1-eth1.network', content: `${KV}[Match]\nName=eth1\n\n[Network]\nDHCP=yes\n${DNS3}` },
  { name: '10-oem-2-eth3.network', content: `${KV}[Match]\nName=eth3\n\n[Network]\nDHCP=ipv4\nGateway=192.168.3.1\n${DNS3}` },
  { name: '10-oem-3-eth2.network', content: `${KV}[Match]\nMACAddress=06:aa:bb:cc:dd:02\n\n[Network]\nDHCP=ipv4\n${DNS3}` },
];

const CD_ATTRS = {
  COREOS_KUBEVIRT_INSTANCE_ID: '5d307ca9-b3ef-428c-8861-06e72d69f223',
  COREOS_KUBEVIRT_HOSTNAME: 'vm1.example.com',
  COREOS_KUBEVIRT_INSTANCE_TYPE: 'u1.medium',
  COREOS_KUBEVIRT_IPV4: '192.168.1.10',
  COREOS_KUBEVIRT_IPV6: '2001:db8::10',
  COREOS_HOSTNAME: 'vm1.example.com',
  COREOS_IPV4_PRIVATE: '192.168.1.10',
  COREOS_IPV6_PUBLIC: '2001:db8::10',
};

/** NoCloud meta-data as KubeVirt writes it (cloudInitNoCloud). */
const NC_META = `instance-id: vm1.default\nlocal-hostname: vm1\ninstance-type: u1.small\npublic-keys:\n  mykey: ${KEY_A}\n`;

/** network-config v1 (cloud-init), as in Afterburn's fixtures. */
const NC_V1 = `version: 1
config:
  - type: physical
    name: eth0
    subnets:
      - type: static
        address: 192.168.1.10
        netmask: 255.255.255.0
        gateway: 192.168.1.1
      - type: static6
        address: 2001:db8::10
        netmask: "ffff:ffff:ffff:ffff::"
        gateway: 2001:db8::1
  - type: physical
    name: eth1
    subnets:
      - type: dhcp
      - type: dhcp6
  - type: physical
    name: eth2
    mac_address: "06:aa:bb:cc:dd:02"
    subnets:
      - type: dhcp4
        dns_nameservers: [9.9.9.9]
        routes:
          - network: 172.16.0.0
            netmask: 255.240.0.0
            gateway: 10.0.2.1
  - type: nameserver
    address:
      - 8.8.8.8
      - 8.8.4.4
    search: [example.com]
`;

const NC_V1_UNITS = [
  { name: '10-oem-0-eth0.network', content: `${KV}[Match]\nName=eth0\n\n[Network]\nAddress=192.168.1.10/24\nAddress=2001:db8::10/64\nGateway=192.168.1.1\nGateway=2001:db8::1\nDNS=8.8.8.8\nDNS=8.8.4.4\n` },
  { name: '10-oem-1-eth1.network', content: `${KV}[Match]\nName=eth1\n\n[Network]\nDHCP=yes\nDNS=8.8.8.8\nDNS=8.8.4.4\n` },
  {
    name: '10-oem-2-eth2.network',
    content: `${KV}[Match]\nMACAddress=06:aa:bb:cc:dd:02\n\n[Network]\nDHCP=ipv4\nDNS=9.9.9.9\nDNS=8.8.8.8\nDNS=8.8.4.4\n\n[Route]\nDestination=172.16.0.0/12\nGateway=10.0.2.1\n`,
  },
];

/** network-config v2 (netplan style), as in Afterburn's fixtures, with a route and global nameservers. */
const NC_V2 = `version: 2
ethernets:
  id0:
    dhcp4: true
    match:
      macaddress: "06:aa:bb:cc:dd:02"
  eth1:
    dhcp4: true
    dhcp6: true
  eth0:
    addresses:
      - 192.168.1.10/24
      - 2001:db8::10/64
    gateway4: 192.168.1.1
    gateway6: 2001:db8::1
    routes:
      - to: 10.10.0.0/16
        via: 192.168.1.254
    nameservers:
      addresses: [8.8.8.8]
nameservers:
  addresses: [1.1.1.1]
`;

const NC_V2_UNITS = [
  {
    name: '10-oem-0-eth0.network',
    content: `${KV}[Match]\nName=eth0\n\n[Network]\nAddress=192.168.1.10/24\nAddress=2001:db8::10/64\nGateway=192.168.1.1\nGateway=2001:db8::1\nDNS=8.8.8.8\nDNS=1.1.1.1\n\n[Route]\nDestination=10.10.0.0/16\nGateway=192.168.1.254\n`,
  },
  { name: '10-oem-1-eth1.network', content: `${KV}[Match]\nName=eth1\n\n[Network]\nDHCP=yes\nDNS=1.1.1.1\n` },
  { name: '10-oem-2-id0.network', content: `${KV}[Match]\nMACAddress=06:aa:bb:cc:dd:02\n\n[Network]\nDHCP=ipv4\nDNS=1.1.1.1\n` },
];

const NC_ATTRS = {
  COREOS_KUBEVIRT_INSTANCE_ID: 'vm1.default',
  COREOS_KUBEVIRT_HOSTNAME: 'vm1',
  COREOS_KUBEVIRT_INSTANCE_TYPE: 'u1.small',
  COREOS_KUBEVIRT_IPV4: '192.168.1.10',
  COREOS_KUBEVIRT_IPV6: '2001:db8::10',
  COREOS_HOSTNAME: 'vm1',
  COREOS_IPV4_PRIVATE: '192.168.1.10',
  COREOS_IPV6_PUBLIC: '2001:db8::10',
};

const USERDATA = '#cloud-config\nwrite_files:\n  - path: /etc/motd\n    content: hi\n';

// --- Proxmox VE fixtures -------------------------------------------------------------------------

const PVE_META = 'instance-id: 15a9919cb91024fbd1d70fa07f0efa749cbba03b\n';
/** user-data as Proxmox VE generates it. */
const PVE_USER = `#cloud-config
hostname: pve-vm
manage_etc_hosts: true
fqdn: pve-vm.example.com
user: core
password: $5$R6Zg0dpt$1vJ.rvLGm4jC3lcNbYWsl1/e8Rrl5ISgnjXWZLf5JS2
ssh_authorized_keys:
  - ${KEY_A}
  - ${KEY_B}
chpasswd:
  expire: False
users:
  - default
package_upgrade: true
`;
/** network-config as Proxmox VE generates it (two NICs, one nameserver entry). */
const PVE_NET = `version: 1
config:
    - type: physical
      name: eth0
      mac_address: 'BC:24:11:00:00:01'
      subnets:
      - type: static
        address: '192.168.1.20'
        netmask: '255.255.255.0'
        gateway: '192.168.1.1'
      - type: static6
        address: '2001:0db8:85a3:0000:0000:8a2e:0370:0/64'
        gateway: '2001:0db8:85a3:0000:0000:8a2e:0370:9999'
    - type: physical
      name: eth1
      mac_address: 'bc:24:11:00:00:02'
      subnets:
      - type: dhcp4
      - type: ipv6_slaac
    - type: nameserver
      address:
      - '1.1.1.1'
      - '8.8.8.8'
      search:
      - 'example.com'
`;
const PVE_UNITS = [
  {
    name: '10-oem-0-eth0.network',
    content: `${PVE}[Match]\nMACAddress=bc:24:11:00:00:01\n\n[Network]\nAddress=192.168.1.20/24\nAddress=2001:db8:85a3::8a2e:370:0/64\nGateway=192.168.1.1\nGateway=2001:db8:85a3::8a2e:370:9999\nDNS=1.1.1.1\nDNS=8.8.8.8\n`,
  },
  { name: '10-oem-1-eth1.network', content: `${PVE}[Match]\nMACAddress=bc:24:11:00:00:02\n\n[Network]\nDHCP=ipv4\nDNS=1.1.1.1\nDNS=8.8.8.8\n` },
];
const PVE_ATTRS = {
  COREOS_PROXMOXVE_INSTANCE_ID: '15a9919cb91024fbd1d70fa07f0efa749cbba03b',
  COREOS_PROXMOXVE_HOSTNAME: 'pve-vm',
  COREOS_PROXMOXVE_IPV4: '192.168.1.20',
  COREOS_PROXMOXVE_IPV6: '2001:db8:85a3::8a2e:370:0',
  COREOS_HOSTNAME: 'pve-vm',
  COREOS_IPV4_PRIVATE: '192.168.1.20',
  COREOS_IPV6_PUBLIC: '2001:db8:85a3::8a2e:370:0',
};
const PVE_DRIVE = { 'meta-data': PVE_META, 'user-data': PVE_USER, 'network-config': PVE_NET, 'vendor-data': '' };

// --- kubevirt ----------------------------------------------------------------------------------------

describe('kubevirt', () => {
  it('config-2 layout: attributes, hostname, keys, network units, userdata', async () => {
    await drive({ 'openstack/latest/meta_data.json': CD_META, 'openstack/latest/network_data.json': CD_NETWORK, 'openstack/latest/user_data': USERDATA });
    const md = await kubevirt.metadata(env());
    expect(md.attributes).toEqual(CD_ATTRS);
    expect(md.hostname).toBe('vm1.example.com');
    expect(md.sshKeys.map(keyBody)).toEqual([keyBody(KEY_A), keyBody(KEY_B)]);
    expect(md.networkUnits).toEqual(CD_UNITS);
    expect((await kubevirt.userdata(env()))?.toString()).toBe(USERDATA);
  });

  it('NoCloud layout, network-config v1: meta-data names, public-keys, units', async () => {
    await drive({ 'meta-data': NC_META, 'network-config': NC_V1, 'user-data': USERDATA });
    const md = await kubevirt.metadata(env());
    expect(md.attributes).toEqual(NC_ATTRS);
    expect(md.hostname).toBe('vm1');
    expect(md.sshKeys.map(keyBody)).toEqual([keyBody(KEY_A)]);
    expect(md.networkUnits).toEqual(NC_V1_UNITS);
    expect((await kubevirt.userdata(env()))?.toString()).toBe(USERDATA);
  });

  it('NoCloud layout, network-config v2 (also as JSON, and wrapped in network:)', async () => {
    await drive({ 'meta-data': NC_META, 'network-config': NC_V2 });
    const md = await kubevirt.metadata(env());
    expect(md.networkUnits).toEqual(NC_V2_UNITS);
    expect(md.attributes).toEqual(NC_ATTRS);
    await drive({ 'network-config': JSON.stringify(parseYaml(NC_V2)) });
    expect((await kubevirt.metadata(env())).networkUnits).toEqual(NC_V2_UNITS);
    await drive({ 'network-config': `network:\n${NC_V2.replace(/^/gm, '  ')}` });
    expect((await kubevirt.metadata(env())).networkUnits).toEqual(NC_V2_UNITS);
  });

  it('prefers the config-2 layout when the disk has both', async () => {
    await drive({ 'openstack/latest/meta_data.json': CD_META, 'meta-data': NC_META, 'user-data': 'nocloud', 'openstack/latest/user_data': 'config-2' });
    expect((await kubevirt.metadata(env())).attributes.COREOS_KUBEVIRT_INSTANCE_ID).toBe(CD_META.uuid);
    expect((await kubevirt.userdata(env()))?.toString()).toBe('config-2');
  });

  it('each value missing: only what is there', async () => {
    await drive({ 'meta-data': 'instance-id: only-id\n' });
    let md = await kubevirt.metadata(env());
    expect(md).toEqual({ attributes: { COREOS_KUBEVIRT_INSTANCE_ID: 'only-id' }, sshKeys: [], networkUnits: [] });
    expect(await kubevirt.userdata(env())).toBeNull();

    await rm(join(root, DRIVE, 'meta-data'));
    await drive({ 'meta-data': 'local-hostname: just-a-name\n', 'user-data': '' });
    md = await kubevirt.metadata(env());
    expect(md).toEqual({ attributes: { COREOS_KUBEVIRT_HOSTNAME: 'just-a-name', COREOS_HOSTNAME: 'just-a-name' }, hostname: 'just-a-name', sshKeys: [], networkUnits: [] });
    expect(await kubevirt.userdata(env())).toBeNull();

    // Only a network: units and the addresses, nothing else.
    await rm(join(root, DRIVE, 'meta-data'));
    await drive({ 'network-config': NC_V1 });
    logs.length = 0;
    md = await kubevirt.metadata(env());
    expect(md.attributes).toEqual({ COREOS_KUBEVIRT_IPV4: '192.168.1.10', COREOS_KUBEVIRT_IPV6: '2001:db8::10', COREOS_IPV4_PRIVATE: '192.168.1.10', COREOS_IPV6_PUBLIC: '2001:db8::10' });
    expect(md.networkUnits).toEqual(NC_V1_UNITS);
    expect(logged('no usable /media/configdrive/meta-data')).toBe(true);

    // A config-2 disk with only meta_data.json: no units, DHCP-only interfaces give no addresses.
    await rm(join(root, DRIVE), { recursive: true });
    await drive({ 'openstack/latest/meta_data.json': { uuid: 'u-1' } });
    expect(await kubevirt.metadata(env())).toEqual({ attributes: { COREOS_KUBEVIRT_INSTANCE_ID: 'u-1' }, sshKeys: [], networkUnits: [] });
    await drive({ 'openstack/latest/network_data.json': { links: [{ id: 'a', ethernet_mac_address: '02:00:00:00:00:01' }], networks: [{ id: 'n', type: 'ipv4_dhcp', link: 'a' }] } });
    const dhcp = await kubevirt.metadata(env());
    expect(dhcp.attributes).toEqual({ COREOS_KUBEVIRT_INSTANCE_ID: 'u-1' });
    expect(dhcp.networkUnits).toEqual([{ name: '10-oem-0-a.network', content: `${KV}[Match]\nMACAddress=02:00:00:00:00:01\n\n[Network]\nDHCP=ipv4\n` }]);
  });

  it('no drive: no metadata, a log line, no error', async () => {
    expect(await kubevirt.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logged('kubevirt: no cloud-init disk at /media/configdrive')).toBe(true);
    expect(await kubevirt.userdata(env())).toBeNull();
    // An empty directory (nothing mounted) is the same.
    await mkdir(join(root, DRIVE), { recursive: true });
    logs.length = 0;
    expect(await kubevirt.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logged('no usable /media/configdrive/meta-data')).toBe(true);
  });

  it('never follows a symlink off the drive; links within it are followed', async () => {
    const outside = join(root, 'outside');
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, 'meta-data'), 'instance-id: stolen\nlocal-hostname: stolen\n');
    await writeFile(join(root, 'etc/shadow'), 'root:secret:::\n');
    await drive({ 'data/network-config': NC_V1 });
    await symlink('../../outside/meta-data', join(root, DRIVE, 'meta-data'));
    await symlink('/etc/shadow', join(root, DRIVE, 'user-data'));
    await symlink('data/network-config', join(root, DRIVE, 'network-config'));
    const md = await kubevirt.metadata(env());
    expect(allText(md)).not.toContain('stolen');
    expect(md.networkUnits).toEqual(NC_V1_UNITS);
    expect(await kubevirt.userdata(env())).toBeNull();

    // The config-2 layout too.
    await rm(join(root, DRIVE), { recursive: true });
    await drive({ 'openstack/latest/network_data.json': CD_NETWORK });
    await writeFile(join(outside, 'meta.json'), JSON.stringify({ uuid: 'stolen', hostname: 'stolen' }));
    await symlink(join('../'.repeat(8), 'outside/meta.json'), join(root, DRIVE, 'openstack/latest/meta_data.json'));
    await symlink('/etc/shadow', join(root, DRIVE, 'openstack/latest/user_data'));
    const cd = await kubevirt.metadata(env());
    expect(allText(cd)).not.toContain('stolen');
    expect(cd.networkUnits).toEqual(CD_UNITS);
    expect(await kubevirt.userdata(env())).toBeNull();
  });

  it('refuses huge files with a log line', async () => {
    await drive({ 'meta-data': `instance-id: big\n#${'x'.repeat(1024 * 1024)}\n`, 'network-config': NC_V1, 'user-data': '' });
    await truncate(join(root, DRIVE, 'user-data'), 17 * 1024 * 1024);
    const md = await kubevirt.metadata(env());
    expect(md.attributes.COREOS_KUBEVIRT_INSTANCE_ID).toBeUndefined();
    expect(md.networkUnits).toEqual(NC_V1_UNITS);
    expect(logged('/media/configdrive/meta-data is larger than 1 MiB')).toBe(true);
    logs.length = 0;
    expect(await kubevirt.userdata(env())).toBeNull();
    expect(logged('/media/configdrive/user-data is larger than 16 MiB')).toBe(true);
  });

  it('ignores malformed YAML and JSON with a log line; the other files still count', async () => {
    await drive({ 'meta-data': 'instance-id: [unclosed\n', 'network-config': NC_V1 });
    let md = await kubevirt.metadata(env());
    expect(md.attributes.COREOS_KUBEVIRT_INSTANCE_ID).toBeUndefined();
    expect(md.networkUnits).toEqual(NC_V1_UNITS);
    expect(logged('/media/configdrive/meta-data: not valid YAML')).toBe(true);

    const cases: [string, string][] = [
      ['instance-id: !!python/object:os.system reboot\n', 'tags are not allowed'],
      ['instance-id: !custom x\n', 'tags are not allowed'],
      ['instance-id: a\ninstance-id: b\n', 'not valid YAML'],
      ['---\ninstance-id: a\n---\ninstance-id: b\n', 'not valid YAML'],
      ['- a list\n', 'not a mapping'],
      [`a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ninstance-id: x\n`, 'Excessive alias count'],
    ];
    for (const [text, why] of cases) {
      await drive({ 'meta-data': text });
      logs.length = 0;
      md = await kubevirt.metadata(env());
      expect(md.attributes.COREOS_KUBEVIRT_INSTANCE_ID, text).toBeUndefined();
      expect(logged(why), `${text}: ${logs.join(' | ')}`).toBe(true);
    }

    await rm(join(root, DRIVE), { recursive: true });
    await drive({ 'openstack/latest/meta_data.json': '{"uuid": "u-2", ', 'openstack/latest/network_data.json': '[1, 2]' });
    logs.length = 0;
    md = await kubevirt.metadata(env());
    expect(md).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logged('openstack/latest/meta_data.json: not valid YAML')).toBe(true);
    expect(logged('openstack/latest/network_data.json: not a mapping')).toBe(true);
  });

  it('drops hostile values and never writes them', async () => {
    const meta = {
      uuid: '$(reboot)',
      hostname: 'evil\n[Service]\nExecStart=/bin/sh -c reboot',
      instance_type: 'x\nExecStart=/bin/reboot',
      public_keys: { a: 'ssh-rsa AAAA$(reboot) x', b: 'not a key', c: `${KEY_A}\nExecStart=/bin/reboot`, d: ['nested'] },
    };
    const network = {
      links: [
        { id: 'l0', name: 'eth0\n[Service]\nExecStart=/bin/sh', ethernet_mac_address: '00:11:22:33:44:55\nExecStart=x' },
        { id: 'l1', name: 'eth1', ethernet_mac_address: 'zz:11:22:33:44:55' },
      ],
      networks: [
        { id: 'n0', type: 'ipv4', link: 'l0', ip_address: '10.0.0.1', netmask: '255.255.255.0' },
        { id: 'n1', type: 'ipv4', link: 'l1', ip_address: '10.0.0.1\nDNS=1.1.1.1', netmask: '255.255.255.0' },
        { id: 'n2', type: 'ipv4', link: 'l1', ip_address: '999.1.1.1', netmask: '255.255.255.0' },
        { id: 'n3', type: 'ipv4', link: 'l1', ip_address: '10.0.1.1/33' },
        { id: 'n4', type: 'ipv4', link: 'l1', ip_address: '10.0.2.1', netmask: '255.0.255.0' },
        { id: 'n5', type: 'ipv6', link: 'l1', ip_address: 'fe80::1%eth0', netmask: '64' },
        {
          id: 'n6',
          type: 'ipv4',
          link: 'l1',
          ip_address: '10.0.3.1',
          netmask: 24,
          dns_nameservers: ['8.8.8.8; reboot', '$(reboot)'],
          routes: [
            { network: '10.9.0.0/8\n[Service]', netmask: '255.0.0.0', gateway: '10.0.3.254' },
            { network: '0.0.0.0', netmask: '0.0.0.0', gateway: '$(reboot)' },
          ],
        },
      ],
      services: [{ type: 'dns', address: '1.1.1.1\nExecStart=x' }],
    };
    await drive({ 'openstack/latest/meta_data.json': meta, 'openstack/latest/network_data.json': network });
    const md = await kubevirt.metadata(env());
    expect(md.hostname).toBeUndefined();
    expect(md.attributes).toEqual({ COREOS_KUBEVIRT_IPV4: '10.0.3.1', COREOS_IPV4_PRIVATE: '10.0.3.1' });
    expect(md.sshKeys.map(keyBody)).toEqual([keyBody(KEY_A)]);
    // l0 has neither a usable name nor MAC address: no unit; l1 is matched by its name.
    expect(md.networkUnits).toEqual([{ name: '10-oem-0-eth1.network', content: `${KV}[Match]\nName=eth1\n\n[Network]\nAddress=10.0.3.1/24\n` }]);
    for (const bad of ['ExecStart', '[Service]', '$(', 'reboot', '999.', '%eth0']) expect(allText(md)).not.toContain(bad);
    for (const why of ['not a plain value', 'contains control characters', 'not a valid interface name', 'not a MAC address', 'not an IP address', 'is not one for IPv4', 'neither a MAC address nor a name', 'invalid SSH key']) {
      expect(logged(why), why).toBe(true);
    }
  });

  it('end to end: metadata (both formats), ssh-keys, hostname, network, userdata', async () => {
    await drive({ 'meta-data': NC_META, 'network-config': NC_V1, 'user-data': 'just text\n' });
    const args = (cmd: string, ...more: string[]) => [cmd, '--root', root, '--provider', 'kubevirt', '--config-drive', DRIVE, ...more];
    for (const cmd of ['metadata', 'ssh-keys', 'hostname', 'network', 'userdata']) {
      const r = await agent(args(cmd));
      expect(r.code, `${cmd}: ${r.out} ${r.err}`).toBe(0);
    }
    expect(await agent(args('metadata', '--format', 'afterburn'))).toMatchObject({ code: 0 });
    expect(await readFile(join(root, 'run/coreos/metadata'), 'utf8')).toBe(
      'COREOS_HOSTNAME=vm1\nCOREOS_IPV4_PRIVATE=192.168.1.10\nCOREOS_IPV6_PUBLIC=2001:db8::10\nCOREOS_KUBEVIRT_HOSTNAME=vm1\nCOREOS_KUBEVIRT_INSTANCE_ID=vm1.default\nCOREOS_KUBEVIRT_INSTANCE_TYPE=u1.small\nCOREOS_KUBEVIRT_IPV4=192.168.1.10\nCOREOS_KUBEVIRT_IPV6=2001:db8::10\n',
    );
    expect(await readFile(join(root, 'run/metadata/afterburn'), 'utf8')).toBe(
      'AFTERBURN_KUBEVIRT_HOSTNAME=vm1\nAFTERBURN_KUBEVIRT_INSTANCE_ID=vm1.default\nAFTERBURN_KUBEVIRT_INSTANCE_TYPE=u1.small\nAFTERBURN_KUBEVIRT_IPV4=192.168.1.10\nAFTERBURN_KUBEVIRT_IPV6=2001:db8::10\n',
    );
    expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe('vm1\n');
    const ak = await readFile(join(root, 'home/core/.ssh/authorized_keys'), 'utf8');
    expect(ak).toContain(keyBody(KEY_A));
    expect((await readdir(join(root, 'etc/systemd/network'))).sort()).toEqual(NC_V1_UNITS.map((u) => u.name));
    for (const u of NC_V1_UNITS) expect(await readFile(join(root, 'etc/systemd/network', u.name), 'utf8')).toBe(u.content);
    expect(await readFile(join(root, 'var/lib/oem-agent/userdata.raw'), 'utf8')).toBe('just text\n');
  });

  it('end to end: hostile values are not written, no drive is not an error', async () => {
    await drive({
      'meta-data': 'instance-id: "$(reboot)"\nlocal-hostname: "a\\n[Service]\\nExecStart=/bin/sh"\npublic-keys: ["garbage"]\n',
      'network-config': 'version: 1\nconfig:\n  - type: physical\n    name: "eth0\\n[Service]\\nExecStart=/bin/sh"\n    subnets: [{type: static, address: "10.0.0.1/24\\nDNS=1.1.1.1"}]\n',
    });
    const args = (cmd: string) => [cmd, '--root', root, '--provider', 'kubevirt', '--config-drive', DRIVE];
    for (const cmd of ['metadata', 'hostname', 'network', 'ssh-keys']) expect((await agent(args(cmd))).code, cmd).toBe(0);
    expect(await readFile(join(root, 'run/coreos/metadata'), 'utf8')).toBe('');
    await expect(readFile(join(root, 'etc/hostname'), 'utf8')).rejects.toThrow();
    expect(await readdir(join(root, 'etc/systemd/network')).catch(() => [])).toEqual([]);

    const empty = await makeRoot();
    const r = await agent(['metadata', '--root', empty, '--provider', 'kubevirt', '--config-drive', DRIVE]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('no cloud-init disk');
    expect(await readFile(join(empty, 'run/coreos/metadata'), 'utf8')).toBe('');
  });
});

// --- proxmoxve ---------------------------------------------------------------------------------------

describe('proxmoxve', () => {
  it('a full drive: attributes, hostname, keys, network units, userdata', async () => {
    await drive(PVE_DRIVE);
    const md = await proxmoxve.metadata(env());
    expect(md.attributes).toEqual(PVE_ATTRS);
    expect(md.hostname).toBe('pve-vm');
    expect(md.sshKeys.map(keyBody)).toEqual([keyBody(KEY_A), keyBody(KEY_B)]);
    expect(md.networkUnits).toEqual(PVE_UNITS);
    expect((await proxmoxve.userdata(env()))?.toString()).toBe(PVE_USER);
    expect(logged('ipv6_slaac')).toBe(true);
  });

  it('each value missing: only what is there', async () => {
    await drive({ 'meta-data': PVE_META });
    let md = await proxmoxve.metadata(env());
    expect(md).toEqual({ attributes: { COREOS_PROXMOXVE_INSTANCE_ID: PVE_ATTRS.COREOS_PROXMOXVE_INSTANCE_ID }, sshKeys: [], networkUnits: [] });
    expect(logged('no /media/configdrive/user-data')).toBe(true);
    expect(logged('no usable /media/configdrive/network-config')).toBe(true);
    expect(await proxmoxve.userdata(env())).toBeNull();

    // user-data of the user's own (cicustom) that is not a #cloud-config: no hostname or keys, passed on as userdata.
    const ignition = '{"ignition": {"version": "3.4.0"}}';
    await rm(join(root, DRIVE, 'meta-data'));
    await drive({ 'user-data': ignition, 'network-config': 'version: 1\nconfig:\n  - type: physical\n    name: eth0\n    subnets: [{type: dhcp}]\n' });
    logs.length = 0;
    md = await proxmoxve.metadata(env());
    expect(md).toEqual({ attributes: {}, sshKeys: [], networkUnits: [{ name: '10-oem-0-eth0.network', content: `${PVE}[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n` }] });
    expect(logged('user-data is not a #cloud-config')).toBe(true);
    expect(logged('no usable /media/configdrive/meta-data')).toBe(true);
    expect((await proxmoxve.userdata(env()))?.toString()).toBe(ignition);

    // A #cloud-config with keys but no hostname; a static subnet without a gateway.
    await drive({ 'user-data': `#cloud-config\nssh_authorized_keys: ["${KEY_B}"]\n`, 'network-config': 'version: 1\nconfig:\n  - type: physical\n    name: eth0\n    subnets: [{type: static, address: 10.1.2.3, netmask: 255.255.0.0}]\n' });
    md = await proxmoxve.metadata(env());
    expect(md.hostname).toBeUndefined();
    expect(md.sshKeys.map(keyBody)).toEqual([keyBody(KEY_B)]);
    expect(md.attributes).toEqual({ COREOS_PROXMOXVE_IPV4: '10.1.2.3', COREOS_IPV4_PRIVATE: '10.1.2.3' });
    expect(md.networkUnits[0]?.content).toBe(`${PVE}[Match]\nName=eth0\n\n[Network]\nAddress=10.1.2.3/16\n`);
  });

  it('no drive: no metadata, a log line, no error', async () => {
    expect(await proxmoxve.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logged('proxmoxve: no cloud-init drive at /media/configdrive')).toBe(true);
    expect(await proxmoxve.userdata(env())).toBeNull();
    // A drive path that is a symlink out of the root is no drive either.
    const outside = join(work, `outside-${Date.now()}`);
    await drive(PVE_DRIVE, outside);
    await mkdir(join(root, 'media'), { recursive: true });
    await symlink(outside, join(root, DRIVE));
    expect(await proxmoxve.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await proxmoxve.userdata(env())).toBeNull();
  });

  it('never follows a symlink off the drive', async () => {
    await mkdir(join(root, 'outside'), { recursive: true });
    await writeFile(join(root, 'outside/user-data'), `#cloud-config\nhostname: stolen\nssh_authorized_keys: ["${KEY_B}"]\n`);
    await writeFile(join(work, 'secret-meta'), 'instance-id: stolen\n');
    await drive({ 'network-config': PVE_NET });
    await symlink('../../outside/user-data', join(root, DRIVE, 'user-data'));
    await symlink(join(work, 'secret-meta'), join(root, DRIVE, 'meta-data'));
    const md = await proxmoxve.metadata(env());
    expect(allText(md)).not.toContain('stolen');
    expect(md.sshKeys).toEqual([]);
    expect(md.networkUnits).toEqual(PVE_UNITS);
    expect(await proxmoxve.userdata(env())).toBeNull();
  });

  it('refuses huge files with a log line', async () => {
    await drive({ ...PVE_DRIVE, 'network-config': `${PVE_NET}#${'x'.repeat(1024 * 1024)}\n`, 'user-data': `${PVE_USER}#${'x'.repeat(1024 * 1024)}\n` });
    let md = await proxmoxve.metadata(env());
    expect(md.networkUnits).toEqual([]);
    expect(md.hostname).toBeUndefined();
    expect(md.attributes).toEqual({ COREOS_PROXMOXVE_INSTANCE_ID: PVE_ATTRS.COREOS_PROXMOXVE_INSTANCE_ID });
    expect(logged('network-config is larger than 1 MiB')).toBe(true);
    expect(logged('user-data is larger than 1048576 bytes; no hostname or SSH keys')).toBe(true);
    // That user-data is still userdata (up to 16 MiB); more is refused.
    expect((await proxmoxve.userdata(env()))?.length).toBeGreaterThan(1024 * 1024);
    await truncate(join(root, DRIVE, 'user-data'), 16 * 1024 * 1024 + 1);
    logs.length = 0;
    expect(await proxmoxve.userdata(env())).toBeNull();
    expect(logged('user-data is larger than 16 MiB')).toBe(true);
    md = await proxmoxve.metadata(env());
    expect(md.sshKeys).toEqual([]);
  });

  it('ignores malformed YAML with a log line', async () => {
    await drive({ ...PVE_DRIVE, 'meta-data': 'instance-id: "unclosed\n', 'user-data': '#cloud-config\nhostname: [\n', 'network-config': 'version: 1\nconfig: !!binary aGVsbG8=\n' });
    const md = await proxmoxve.metadata(env());
    expect(md).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logged('/media/configdrive/meta-data: not valid YAML')).toBe(true);
    expect(logged('/media/configdrive/user-data: not valid YAML')).toBe(true);
    expect(logged('/media/configdrive/network-config: not accepted')).toBe(true);
    // A network-config of another shape.
    await drive({ 'network-config': 'version: 3\n' });
    logs.length = 0;
    expect((await proxmoxve.metadata(env())).networkUnits).toEqual([]);
    expect(logged('the version "3" is not supported')).toBe(true);
    await drive({ 'network-config': 'version: 1\nconfig: {type: physical}\n' });
    logs.length = 0;
    expect((await proxmoxve.metadata(env())).networkUnits).toEqual([]);
    expect(logged('no "config" list')).toBe(true);
  });

  it('drops hostile values and never writes them', async () => {
    const user = `#cloud-config
hostname: "pve\\nExecStart=/bin/sh"
ssh_authorized_keys:
  - "$(reboot)"
  - "ssh-ed25519 AAAA garbage"
  - 42
`;
    const net = `version: 1
config:
  - type: physical
    name: "eth0\\n[Service]\\nExecStart=/bin/sh"
    mac_address: "bc:24:11:00:00:01\\nExecStart=x"
    subnets: [{type: static, address: 10.0.0.1, netmask: 255.255.255.0}]
  - type: physical
    name: eth1
    subnets:
      - type: static
        address: "10.0.0.2\\nDNS=6.6.6.6"
        gateway: "$(reboot)"
      - type: static
        address: 10.0.0.3/24
        gateway: 10.0.0.1
        routes: [{network: "10.1.0.0\\n[Service]", netmask: 255.255.0.0, gateway: 10.0.0.1}, {network: 10.2.0.0, netmask: 300.0.0.0, gateway: 10.0.0.1}]
  - type: bond
    name: bond0
  - type: nameserver
    address: ["1.1.1.1\\nExecStart=x", 9.9.9.9]
  - type: nameserver
    address: [6.6.6.6]
`;
    await drive({ 'meta-data': 'instance-id: "a b"\n', 'user-data': user, 'network-config': net });
    const md = await proxmoxve.metadata(env());
    expect(md.hostname).toBeUndefined();
    expect(md.sshKeys).toEqual([]);
    // eth0 has neither a usable name nor MAC address: left out, eth1 is the first interface.
    expect(md.attributes).toEqual({ COREOS_PROXMOXVE_IPV4: '10.0.0.3', COREOS_IPV4_PRIVATE: '10.0.0.3' });
    expect(md.networkUnits).toEqual([{ name: '10-oem-0-eth1.network', content: `${PVE}[Match]\nName=eth1\n\n[Network]\nAddress=10.0.0.3/24\nGateway=10.0.0.1\nDNS=9.9.9.9\n` }]);
    for (const bad of ['ExecStart', '[Service]', '$(', '6.6.6.6', 'reboot']) expect(allText(md)).not.toContain(bad);
    for (const why of ['not a plain value', 'contains control characters', 'not a valid interface name', 'not a MAC address', 'not an IP address', 'the type "bond" is not supported', 'a second nameserver entry', 'invalid SSH key', 'not a string']) {
      expect(logged(why), why).toBe(true);
    }

    // End to end: nothing of it reaches a file.
    const args = (cmd: string) => [cmd, '--root', root, '--provider', 'proxmoxve', '--config-drive', DRIVE];
    for (const cmd of ['metadata', 'hostname', 'network', 'ssh-keys']) expect((await agent(args(cmd))).code, cmd).toBe(0);
    expect(await readFile(join(root, 'run/coreos/metadata'), 'utf8')).toBe('COREOS_IPV4_PRIVATE=10.0.0.3\nCOREOS_PROXMOXVE_IPV4=10.0.0.3\n');
    await expect(readFile(join(root, 'etc/hostname'), 'utf8')).rejects.toThrow();
    const units = await readdir(join(root, 'etc/systemd/network'));
    expect(units).toEqual(['10-oem-0-eth1.network']);
    expect(await readFile(join(root, 'etc/systemd/network', units[0]!), 'utf8')).not.toMatch(/ExecStart|Service|6\.6\.6\.6/);
  });

  it('end to end: metadata (both formats), ssh-keys, hostname, network, userdata', async () => {
    await drive(PVE_DRIVE);
    const args = (cmd: string, ...more: string[]) => [cmd, '--root', root, '--provider', 'proxmoxve', '--config-drive', DRIVE, ...more];
    for (const cmd of ['metadata', 'ssh-keys', 'hostname', 'network']) {
      const r = await agent(args(cmd));
      expect(r.code, `${cmd}: ${r.out} ${r.err}`).toBe(0);
    }
    expect((await agent(args('metadata', '--format', 'afterburn'))).code).toBe(0);
    expect(await readFile(join(root, 'run/coreos/metadata'), 'utf8')).toBe(
      'COREOS_HOSTNAME=pve-vm\nCOREOS_IPV4_PRIVATE=192.168.1.20\nCOREOS_IPV6_PUBLIC=2001:db8:85a3::8a2e:370:0\nCOREOS_PROXMOXVE_HOSTNAME=pve-vm\nCOREOS_PROXMOXVE_INSTANCE_ID=15a9919cb91024fbd1d70fa07f0efa749cbba03b\nCOREOS_PROXMOXVE_IPV4=192.168.1.20\nCOREOS_PROXMOXVE_IPV6=2001:db8:85a3::8a2e:370:0\n',
    );
    expect(await readFile(join(root, 'run/metadata/afterburn'), 'utf8')).toBe(
      'AFTERBURN_PROXMOXVE_HOSTNAME=pve-vm\nAFTERBURN_PROXMOXVE_INSTANCE_ID=15a9919cb91024fbd1d70fa07f0efa749cbba03b\nAFTERBURN_PROXMOXVE_IPV4=192.168.1.20\nAFTERBURN_PROXMOXVE_IPV6=2001:db8:85a3::8a2e:370:0\n',
    );
    expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe('pve-vm\n');
    const ak = await readFile(join(root, 'home/core/.ssh/authorized_keys'), 'utf8');
    expect(ak).toContain(keyBody(KEY_A));
    expect(ak).toContain(keyBody(KEY_B));
    expect((await readdir(join(root, 'etc/systemd/network'))).sort()).toEqual(PVE_UNITS.map((u) => u.name));
    for (const u of PVE_UNITS) expect(await readFile(join(root, 'etc/systemd/network', u.name), 'utf8')).toBe(u.content);

    const empty = await makeRoot();
    const r = await agent(['network', '--root', empty, '--provider', 'proxmoxve', '--config-drive', DRIVE]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('no cloud-init drive');
  });
});
