/**
 * The packet (Equinix Metal) and scaleway providers against a mock metadata service on 127.0.0.1
 * (an ephemeral port) that answers in the platforms' formats (Afterburn's mock tests and the
 * platforms' documentation): every value, each value missing, a 500 that recovers, a dead service,
 * hostile values, the boot check-ins (the exact requests), and the agent's subcommands end to end
 * on temporary roots. Every env and every CLI call points at the local mock (the phone-home URL
 * too): nothing here talks to metadata.platformequinix.com or 169.254.42.42.
 *
 * Scaleway's user_data is asked from a source port below 1024: tests run as root (CI).
 */
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { agent, agentArgs, deadUrl, edKey, type Reply, type Route, TEST_HTTP, useMetadataMock } from './helpers/metadata-mock.js';
import { afterburnAttributes } from '../oem/providers/actions.js';
import { MAX_USERDATA_BYTES } from '../oem/providers/local-io.js';
import { cleanHttpUrl, provider as packet } from '../oem/providers/packet.js';
import { lowPortRequest, provider as scaleway } from '../oem/providers/scaleway.js';
import { agentPlatform } from '../src/shared/platforms.js';

const KEY = { a: edKey('alice@example'), b: edKey('bob@example'), c: edKey('carol@example') };

const { mock, logs, env, makeRoot } = useMetadataMock('oem-packet-scaleway-test-');
const cli = (cmd: string, root: string, provider: string, ...more: string[]) => agent(agentArgs(cmd, root, provider, mock.base, ...more));
const json = (doc: unknown): Reply => ({ body: JSON.stringify(doc), headers: { 'Content-Type': 'application/json' } });
const logged = (re: RegExp) => logs.some((l) => re.test(l));

describe('the descriptors and defaults', () => {
  it('name the platforms as Afterburn does and point at the real services (never contacted here)', () => {
    expect(agentPlatform('packet')).toMatchObject({ name: 'PACKET', afterburn: 'PACKET', does: ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata', 'check-in'] });
    expect(agentPlatform('scaleway')).toMatchObject({ name: 'SCALEWAY', afterburn: 'SCALEWAY', does: ['attributes', 'hostname', 'ssh-keys', 'userdata', 'check-in'] });
    expect(packet.metadataUrl).toBe('https://metadata.platformequinix.com');
    expect(scaleway.metadataUrl).toBe('http://169.254.42.42');
    expect(typeof packet.checkIn).toBe('function');
    expect(typeof scaleway.checkIn).toBe('function');
  });
});

// ---------------------------------------------------------------------------------------------
// Packet

const MAC0 = '0c:c4:7a:e1:3d:d0';
const MAC1 = '0c:c4:7a:e1:3d:d1';
const PHONE_HOME = '/phone-home';

/** Equinix Metal's metadata (the documented format, trimmed), with `over` replacing top-level fields. */
function packetDoc(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'd4b783e9-89f3-4d35-bdcd-ff6753b11911',
    hostname: 'metal-1.example',
    iqn: 'iqn.2021-09.net.packet:device.d4b783e9',
    plan: 'c3.small.x86',
    class: 'c3.small.x86',
    facility: 'sv15',
    tags: [],
    ssh_keys: [KEY.a, KEY.b],
    network: {
      bonding: { mode: 4 },
      interfaces: [
        { name: 'enp1s0f0', mac: MAC0, bond: 'bond0' },
        { name: 'enp1s0f1', mac: MAC1, bond: 'bond0' },
      ],
      addresses: [
        { id: 'a1', address_family: 4, netmask: '255.255.255.254', created_at: '2021-09-01T00:00:00Z', public: true, cidr: 31, management: true, enabled: true, network: '147.75.104.32', address: '147.75.104.33', gateway: '147.75.104.32' },
        { id: 'a2', address_family: 6, netmask: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe', public: true, cidr: 127, management: true, enabled: true, network: '2604:1380:1:4d00::', address: '2604:1380:1:4d00::1', gateway: '2604:1380:1:4d00::' },
        { id: 'a3', address_family: 4, netmask: '255.255.255.254', public: false, cidr: 31, management: true, enabled: true, network: '10.99.182.128', address: '10.99.182.129', gateway: '10.99.182.128' },
      ],
    },
    api_url: 'https://metadata.platformequinix.com/metal',
    phone_home_url: `${mock.base}${PHONE_HOME}`,
    user_state_url: `${mock.base}/events`,
    ...over,
  };
}

const packetRoutes = (over: Record<string, Route> = {}): Record<string, Route> => ({
  '/metadata': json(packetDoc()),
  '/userdata': { body: '#cloud-config\nhostname: from-userdata\n' },
  [`POST ${PHONE_HOME}`]: { status: 200, body: '' },
  ...over,
});

const PACKET_ATTRIBUTES = () => ({
  COREOS_HOSTNAME: 'metal-1.example',
  COREOS_PACKET_HOSTNAME: 'metal-1.example',
  COREOS_PACKET_PLAN: 'c3.small.x86',
  COREOS_PACKET_PHONE_HOME_URL: `${mock.base}${PHONE_HOME}`,
  COREOS_PACKET_IPV4_PUBLIC_0: '147.75.104.33',
  COREOS_PACKET_IPV4_PUBLIC_GATEWAY_0: '147.75.104.32',
  COREOS_PACKET_IPV6_PUBLIC_0: '2604:1380:1:4d00::1',
  COREOS_PACKET_IPV6_PUBLIC_GATEWAY_0: '2604:1380:1:4d00::',
  COREOS_PACKET_IPV4_PRIVATE_0: '10.99.182.129',
  COREOS_PACKET_IPV4_PRIVATE_GATEWAY_0: '10.99.182.128',
  COREOS_IPV4_PUBLIC: '147.75.104.33',
  COREOS_IPV6_PUBLIC: '2604:1380:1:4d00::1',
  COREOS_IPV4_PRIVATE: '10.99.182.129',
});

const HEADER = '# Written by oem-agent from the Equinix Metal metadata.';
const BOND_NETDEV = [
  HEADER,
  '[NetDev]',
  'Name=bond0',
  'Kind=bond',
  `MACAddress=${MAC0}`,
  '',
  '[Bond]',
  'TransmitHashPolicy=layer3+4',
  'MIIMonitorSec=.1',
  'UpDelaySec=.2',
  'DownDelaySec=.2',
  'Mode=802.3ad',
  'LACPTransmitRate=fast',
  '',
].join('\n');
const BOND_NETWORK = [
  HEADER,
  '[Match]',
  'Name=bond0',
  '',
  '[Network]',
  'DNS=147.75.207.207',
  'DNS=147.75.207.208',
  '',
  '[Address]',
  'Address=147.75.104.33/31',
  '',
  '[Address]',
  'Address=2604:1380:1:4d00::1/127',
  '',
  '[Address]',
  'Address=10.99.182.129/31',
  '',
  '[Route]',
  'Destination=0.0.0.0/0',
  'Gateway=147.75.104.32',
  '',
  '[Route]',
  'Destination=::/0',
  'Gateway=2604:1380:1:4d00::',
  '',
  '[Route]',
  'Destination=10.0.0.0/8',
  'Gateway=10.99.182.128',
  '',
].join('\n');
const slaveUnit = (mac: string) => `${HEADER}\n[Match]\nMACAddress=${mac}\n\n[Network]\nBond=bond0\n`;
const PACKET_UNIT_NAMES = ['10-oem-0-bond0.netdev', '10-oem-0-bond0.network', '10-oem-1-0cc47ae13dd0.network', '10-oem-2-0cc47ae13dd1.network'];

/** A root whose networkd state lists the DNS servers DHCP gave (Afterburn reads them there). */
async function rootWithDns(dns = '147.75.207.207 147.75.207.208'): Promise<string> {
  const root = await makeRoot();
  await mkdir(join(root, 'run/systemd/netif'), { recursive: true });
  await writeFile(join(root, 'run/systemd/netif/state'), `# This is private data. Do not parse.\nOPER_STATE=routable\nDNS=${dns}\nNTP=\n`);
  return root;
}

describe('packet', () => {
  it('reads every value: attributes, hostname, keys, the bond and its slaves, userdata', async () => {
    mock.reset(packetRoutes());
    const md = await packet.metadata(env(await rootWithDns()));
    expect(md.attributes).toEqual(PACKET_ATTRIBUTES());
    expect(md.hostname).toBe('metal-1.example');
    expect(md.sshKeys).toEqual([KEY.a, KEY.b]);
    expect(md.networkUnits.map((u) => u.name)).toEqual(PACKET_UNIT_NAMES);
    expect(md.networkUnits.map((u) => u.content)).toEqual([BOND_NETDEV, BOND_NETWORK, slaveUnit(MAC0), slaveUnit(MAC1)]);
    expect(mock.seen.map((s) => `${s.method} ${s.path}`)).toEqual(['GET /metadata']);
    expect((await packet.userdata(env()))?.toString()).toBe('#cloud-config\nhostname: from-userdata\n');
    expect(mock.seen.at(-1)).toMatchObject({ method: 'GET', path: '/userdata', query: '' });
    // Afterburn's names for --format afterburn.
    expect(Object.keys(afterburnAttributes('packet', md.attributes)).sort()).toEqual([
      'AFTERBURN_PACKET_HOSTNAME',
      'AFTERBURN_PACKET_IPV4_PRIVATE_0',
      'AFTERBURN_PACKET_IPV4_PRIVATE_GATEWAY_0',
      'AFTERBURN_PACKET_IPV4_PUBLIC_0',
      'AFTERBURN_PACKET_IPV4_PUBLIC_GATEWAY_0',
      'AFTERBURN_PACKET_IPV6_PUBLIC_0',
      'AFTERBURN_PACKET_IPV6_PUBLIC_GATEWAY_0',
      'AFTERBURN_PACKET_PHONE_HOME_URL',
      'AFTERBURN_PACKET_PLAN',
    ]);
  });

  it('counts addresses per family and kind; other bonding modes; interfaces without a bond are unmanaged', async () => {
    const network = {
      bonding: { mode: 5 },
      interfaces: [
        { name: 'eth0', mac: MAC0, bond: 'bond0' },
        { name: 'eth1', mac: MAC1 },
      ],
      addresses: [
        { address_family: 4, public: true, address: '147.75.104.33', netmask: '255.255.255.254', gateway: '147.75.104.32' },
        { address_family: 4, public: true, address: '147.75.104.35', netmask: '255.255.255.254', gateway: '147.75.104.34' },
        { address_family: 6, public: false, address: 'FD00::5', cidr: 64 },
      ],
    };
    mock.reset({ '/metadata': json(packetDoc({ network })) });
    const md = await packet.metadata(env('/nonexistent-root'));
    expect(md.attributes).toMatchObject({
      COREOS_PACKET_IPV4_PUBLIC_0: '147.75.104.33',
      COREOS_PACKET_IPV4_PUBLIC_1: '147.75.104.35',
      COREOS_PACKET_IPV4_PUBLIC_GATEWAY_1: '147.75.104.34',
      COREOS_PACKET_IPV6_PRIVATE_0: 'fd00::5',
      COREOS_IPV4_PUBLIC: '147.75.104.33',
      COREOS_IPV6_PRIVATE: 'fd00::5',
    });
    expect(md.attributes.COREOS_PACKET_IPV6_PRIVATE_GATEWAY_0).toBeUndefined();
    expect(md.networkUnits.map((u) => u.name)).toEqual(['10-oem-0-bond0.netdev', '10-oem-0-bond0.network', '10-oem-1-0cc47ae13dd0.network', '10-oem-2-0cc47ae13dd1.network']);
    expect(md.networkUnits[0]!.content).toContain('Mode=balance-tlb\n');
    expect(md.networkUnits[0]!.content).not.toContain('LACPTransmitRate');
    // No DNS servers known (no networkd state): none written, said so.
    expect(md.networkUnits[1]!.content).not.toContain('DNS=');
    expect(md.networkUnits[1]!.content).toContain('[Address]\nAddress=fd00::5/64\n');
    expect(logged(/packet: \/run\/systemd\/netif\/state is not there; the bond gets no DNS servers/)).toBe(true);
    expect(md.networkUnits[3]!.content).toBe(`${HEADER}\n[Match]\nMACAddress=${MAC1}\n\n[Network]\n\n[Link]\nUnmanaged=yes\n`);
  });

  it.each([
    ['hostname', ['COREOS_HOSTNAME', 'COREOS_PACKET_HOSTNAME']],
    ['plan', ['COREOS_PACKET_PLAN']],
    ['phone_home_url', ['COREOS_PACKET_PHONE_HOME_URL']],
    ['ssh_keys', []],
    ['network', Object.keys(PACKET_ATTRIBUTES()).filter((k) => k.includes('IPV'))],
  ])('a missing %s leaves only that out', async (field, gone) => {
    const doc = packetDoc();
    delete doc[field];
    mock.reset(packetRoutes({ '/metadata': json(doc) }));
    const md = await packet.metadata(env(await rootWithDns()));
    const want: Record<string, string> = PACKET_ATTRIBUTES();
    for (const k of gone) delete want[k];
    expect(md.attributes).toEqual(want);
    expect(md.hostname).toBe(field === 'hostname' ? undefined : 'metal-1.example');
    expect(md.sshKeys).toEqual(field === 'ssh_keys' ? [] : [KEY.a, KEY.b]);
    expect(md.networkUnits.map((u) => u.name)).toEqual(field === 'network' ? [] : PACKET_UNIT_NAMES);
  });

  it('404 is absent: empty metadata, no userdata; an empty userdata is none', async () => {
    mock.reset({});
    expect(await packet.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logs).toContain('packet: the metadata service has no metadata');
    expect(await packet.userdata(env())).toBeNull();
    mock.reset({ '/userdata': { body: '' } });
    expect(await packet.userdata(env())).toBeNull();
  });

  it('retries a 500, then reads the document; garbage is a clear error', async () => {
    mock.reset(packetRoutes({ '/metadata': [{ status: 500, body: 'oops' }, json(packetDoc())] }));
    expect((await packet.metadata(env())).attributes.COREOS_PACKET_PLAN).toBe('c3.small.x86');
    expect(mock.hits('/metadata')).toBe(2);
    expect(logged(/^GET http:\/\/127\.0\.0\.1:\d+\/metadata failed \(attempt 1\/3\): HTTP 500/)).toBe(true);
    mock.reset({ '/metadata': { body: '<html>502</html>' } });
    await expect(packet.metadata(env())).rejects.toThrow(/^packet: http:\/\/127\.0\.0\.1:\d+\/metadata is not valid JSON \(16 bytes\)/);
    mock.reset({ '/metadata': { body: '["a"]' } });
    await expect(packet.metadata(env())).rejects.toThrow(/^packet: http:\/\/127\.0\.0\.1:\d+\/metadata is not a JSON object$/);
  });

  it('a dead service is an error naming the URL after the configured tries', async () => {
    const e = env('/nonexistent-root', { metadataUrl: await deadUrl() });
    await expect(packet.metadata(e)).rejects.toThrow(/^GET http:\/\/127\.0\.0\.1:\d+\/metadata failed after 3 attempts: fetch failed: ECONNREFUSED$/);
    await expect(packet.userdata(e)).rejects.toThrow(/^GET http:\/\/127\.0\.0\.1:\d+\/userdata failed after 3 attempts: fetch failed: ECONNREFUSED$/);
    await expect(packet.checkIn!(e)).rejects.toThrow(/^packet: cannot check in: the metadata is not available: GET http:\/\/127\.0\.0\.1:\d+\/metadata failed after 3 attempts/);
  });

  it('hostile values are dropped with a log line and never reach attributes or units', async () => {
    const doc = packetDoc({
      hostname: 'metal-1\n$(reboot)',
      plan: 'c3.small.x86; $(reboot)',
      phone_home_url: 'file:///etc/shadow',
      ssh_keys: [KEY.a, 'ssh-rsa AAAA $(reboot)', 42, `ssh-ed25519 ${'A'.repeat(300_000)}`, `${KEY.c}\ncommand="reboot" not-a-key`],
      network: {
        bonding: { mode: 4 },
        interfaces: [
          { name: 'x', mac: MAC0, bond: 'bond0' },
          { name: 'y', mac: 'zz:zz:zz:zz:zz:zz', bond: 'bond0' },
          { name: 'z', mac: MAC1, bond: 'bond0\nDNS=6.6.6.6' },
          { name: 'w', mac: '0c:c4:7a:e1:3d:d2', bond: '../../etc/systemd/system/evil' },
          'not-an-object',
        ],
        addresses: [
          { address_family: 4, public: true, address: '147.75.104.33\n[Network]\nDNS=6.6.6.6', netmask: '255.255.255.254', gateway: '147.75.104.32' },
          { address_family: 4, public: true, address: '999.1.1.1', netmask: '255.255.255.254' },
          { address_family: 4, public: true, address: '147.75.104.35', netmask: '255.0.255.0', gateway: '147.75.104.34' },
          { address_family: 4, public: 'yes', address: '147.75.104.37', netmask: '255.255.255.254' },
          { address_family: 6, public: true, address: '147.75.104.39', netmask: '255.255.255.254' },
          { address_family: 4, public: true, address: '147.75.104.41', netmask: '255.255.255.254', gateway: '$(reboot)' },
        ],
      },
    });
    mock.reset(packetRoutes({ '/metadata': json(doc) }));
    const md = await packet.metadata(env(await rootWithDns('1.1.1.1 $(reboot) 8.8.8.8\nDNS=6.6.6.6')));
    expect(md.hostname).toBeUndefined();
    expect(md.attributes).toEqual({ COREOS_PACKET_IPV4_PUBLIC_0: '147.75.104.41', COREOS_IPV4_PUBLIC: '147.75.104.41' });
    expect(md.sshKeys).toEqual([KEY.a, KEY.c]);
    expect(md.networkUnits.map((u) => u.name)).toEqual(['10-oem-0-bond0.netdev', '10-oem-0-bond0.network', '10-oem-1-0cc47ae13dd0.network']);
    expect(md.networkUnits[1]!.content).toBe(`${HEADER}\n[Match]\nName=bond0\n\n[Network]\nDNS=1.1.1.1\nDNS=8.8.8.8\n\n[Address]\nAddress=147.75.104.41/31\n`);
    const all = JSON.stringify(md);
    for (const bad of ['reboot', '6.6.6.6', 'shadow', '../', '999.1.1.1']) expect(all).not.toContain(bad);
    for (const re of [
      /^ignoring packet: the hostname "metal-1\\n\$\(reboot\)": it contains control characters/,
      /^packet: ignoring the plan "c3\.small\.x86; \$\(reboot\)": not a single word$/,
      /^ignoring packet: the phone_home_url "file:\/\/\/etc\/shadow": not an http or https URL$/,
      /^ignoring packet: interface 1: MAC "zz:zz:zz:zz:zz:zz": not a MAC address$/,
      /^packet: interface 2 \(0c:c4:7a:e1:3d:d1\): ignored, the bond name "bond0\\nDNS=6\.6\.6\.6" is not an interface name/,
      /^packet: interface 3 \(0c:c4:7a:e1:3d:d2\): ignored, the bond name "\.\.\/\.\.\/etc/,
      /^ignoring packet: address 0: "147\.75\.104\.33\\n\[Network\]/,
      /^ignoring packet: address 1: "999\.1\.1\.1": not an IPv4 or IPv6 address$/,
      /^packet: address 2: ignoring 147\.75\.104\.35: neither the netmask "255\.0\.255\.0"/,
      /^packet: address 3: ignoring 147\.75\.104\.37: "public" is "yes", not true or false$/,
      /^packet: address 4: ignoring 147\.75\.104\.39: its address_family "6" is not 4$/,
      /^ignoring packet: address 5: the gateway "\$\(reboot\)": not an IPv4 address$/,
      /^ignoring packet: the DNS server in \/run\/systemd\/netif\/state "\$\(reboot\)"/,
    ]) {
      expect(logged(re), String(re)).toBe(true);
    }
    expect(logs.filter((l) => l.startsWith('ignoring an invalid SSH key'))).toHaveLength(3);
  });

  it('an unknown bonding mode writes no units; a bond-less machine gets unmanaged interfaces only', async () => {
    const network = (packetDoc().network as Record<string, unknown>) ?? {};
    mock.reset({ '/metadata': json(packetDoc({ network: { ...network, bonding: { mode: 'reboot' } } })) });
    expect((await packet.metadata(env())).networkUnits).toEqual([]);
    expect(logged(/^packet: no network units: the bonding mode "reboot" is not one of 0\.\.6$/)).toBe(true);
    mock.reset({ '/metadata': json(packetDoc({ network: { ...network, interfaces: [{ name: 'eth0', mac: MAC0 }] } })) });
    const md = await packet.metadata(env());
    expect(md.networkUnits).toEqual([{ name: '10-oem-1-0cc47ae13dd0.network', content: `${HEADER}\n[Match]\nMACAddress=${MAC0}\n\n[Network]\n\n[Link]\nUnmanaged=yes\n` }]);
    expect(md.attributes.COREOS_PACKET_IPV4_PUBLIC_0).toBe('147.75.104.33');
  });

  it('huge bodies: a metadata document over 4 MiB and userdata over the limit are refused', async () => {
    mock.reset({ '/metadata': { body: `{"hostname":"${'a'.repeat(4 * 1024 * 1024)}"}` }, '/userdata': { body: Buffer.alloc(MAX_USERDATA_BYTES + 1, 0x61) } });
    await expect(packet.metadata(env())).rejects.toThrow(/^packet: http:\/\/127\.0\.0\.1:\d+\/metadata is 4194319 bytes, more than the 4194304 a metadata document may be$/);
    await expect(packet.userdata(env())).rejects.toThrow(/^packet: the userdata is larger than 16777216 bytes$/);
    // A huge hostname inside a normal document is a value like any other: dropped.
    mock.reset({ '/metadata': json(packetDoc({ hostname: 'a'.repeat(300_000) })) });
    const md = await packet.metadata(env());
    expect(md.hostname).toBeUndefined();
    expect(md.attributes.COREOS_PACKET_PLAN).toBe('c3.small.x86');
  });

  it('cleanHttpUrl: http(s) only, no credentials, no whitespace, at most 2048 characters', () => {
    const l: string[] = [];
    const log = (x: string) => l.push(x);
    expect(cleanHttpUrl('http://tinkerbell.ewr1.packet.net/phone-home', log, 'u')).toBe('http://tinkerbell.ewr1.packet.net/phone-home');
    expect(cleanHttpUrl('HTTPS://Example.com/a?b=c', log, 'u')).toBe('https://example.com/a?b=c');
    for (const bad of ['ftp://x/', 'javascript:alert(1)', 'file:///etc/passwd', 'http://user:pw@x/', 'http://x/\n', 'http://x/ y', '/relative', `http://x/${'a'.repeat(2048)}`, 42]) {
      expect(cleanHttpUrl(bad, log, 'u'), String(bad)).toBeUndefined();
    }
    expect(l).toHaveLength(9);
    expect(cleanHttpUrl(undefined, log, 'u')).toBeUndefined();
    expect(l).toHaveLength(9);
  });
});

describe('packet check-in (phone-home)', () => {
  it('POSTs to the phone_home_url from the metadata: the exact request', async () => {
    mock.reset(packetRoutes());
    await packet.checkIn!(env());
    expect(mock.seen.map((s) => `${s.method} ${s.path}`)).toEqual(['GET /metadata', `POST ${PHONE_HOME}`]);
    const post = mock.seen[1]!;
    expect(post.query).toBe('');
    expect(post.headers['content-type']).toBe('application/json');
    expect(post.headers['content-length']).toBe('0');
    expect(post.body.length).toBe(0);
    expect(logs).toContain(`packet: phoned home to ${mock.base}${PHONE_HOME}`);
  });

  it('retries a 500, then succeeds', async () => {
    mock.reset(packetRoutes({ [`POST ${PHONE_HOME}`]: [{ status: 500 }, { status: 200 }] }));
    await packet.checkIn!(env());
    expect(mock.hits(PHONE_HOME)).toBe(2);
    expect(logged(/^POST http:\/\/127\.0\.0\.1:\d+\/phone-home failed \(attempt 1\/3\): HTTP 500/)).toBe(true);
  });

  it('fails with one line: 500 to the end, 403 at once, no usable phone_home_url', async () => {
    mock.reset(packetRoutes({ [`POST ${PHONE_HOME}`]: { status: 500 } }));
    await expect(packet.checkIn!(env())).rejects.toThrow(/^packet: the phone-home failed: POST http:\/\/127\.0\.0\.1:\d+\/phone-home failed after 3 attempts: HTTP 500 Internal Server Error$/);
    expect(mock.hits(PHONE_HOME)).toBe(3);
    mock.reset(packetRoutes({ [`POST ${PHONE_HOME}`]: { status: 403 } }));
    await expect(packet.checkIn!(env())).rejects.toThrow(/^packet: the phone-home failed: POST http:\/\/127\.0\.0\.1:\d+\/phone-home failed: HTTP 403 Forbidden$/);
    expect(mock.hits(PHONE_HOME)).toBe(1);
    for (const url of [undefined, 'gopher://127.0.0.1/phone-home', `${mock.base}/x\n`]) {
      mock.reset(packetRoutes({ '/metadata': json(packetDoc({ phone_home_url: url })) }));
      const err = await packet.checkIn!(env()).catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toBe('packet: cannot check in: the metadata has no usable phone_home_url');
      expect(mock.seen.map((s) => s.method)).toEqual(['GET']);
    }
    expect(logged(/^ignoring packet: the phone_home_url "gopher:\/\/127\.0\.0\.1\/phone-home": not an http or https URL$/)).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Scaleway

/** Scaleway's conf?format=json (Afterburn's mock test document, with keys and the usual extras). */
function scwDoc(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: '11111111-1111-1111-1111-111111111111',
    name: 'frontend-0',
    hostname: 'frontend-0',
    commercial_type: 'GP1-M',
    organization: '22222222-2222-2222-2222-222222222222',
    location: { zone_id: 'par1', platform_id: '14', cluster_id: '5', hypervisor_id: '101', node_id: '2' },
    private_ip: '10.0.0.2',
    public_ip: { address: '93.184.216.34', dynamic: false, id: '33333333-3333-3333-3333-333333333333' },
    ipv6: { address: '2001:db8::1', gateway: '2001:db8::', netmask: '64' },
    ssh_public_keys: [
      { key: KEY.a, fingerprint: '256 SHA256:aaa alice@example (ED25519)' },
      { key: KEY.b, fingerprint: '256 SHA256:bbb bob@example (ED25519)' },
    ],
    tags: [],
    state_detail: 'booting kernel',
    ...over,
  };
}

const scwRoutes = (over: Record<string, Route> = {}): Record<string, Route> => ({
  '/conf': (req) => (req.query === 'format=json' ? json(scwDoc()) : { status: 400, body: 'want format=json' }),
  '/user_data/cloud-init': { body: '#cloud-config\nhostname: from-scaleway\n' },
  'PATCH /state': { status: 200, body: '{"state_detail":"booted"}' },
  ...over,
});

const SCW_ATTRIBUTES = {
  COREOS_HOSTNAME: 'frontend-0',
  COREOS_SCALEWAY_HOSTNAME: 'frontend-0',
  COREOS_SCALEWAY_INSTANCE_ID: '11111111-1111-1111-1111-111111111111',
  COREOS_SCALEWAY_INSTANCE_TYPE: 'GP1-M',
  COREOS_SCALEWAY_ZONE_ID: 'par1',
  COREOS_SCALEWAY_IPV4_PRIVATE: '10.0.0.2',
  COREOS_SCALEWAY_IPV4_PUBLIC: '93.184.216.34',
  COREOS_SCALEWAY_IPV6_PUBLIC: '2001:db8::1',
  COREOS_IPV4_PRIVATE: '10.0.0.2',
  COREOS_IPV4_PUBLIC: '93.184.216.34',
  COREOS_IPV6_PUBLIC: '2001:db8::1',
};

/** A one-route server that records the source port of each request (the mock does not see it). */
async function portRecorder(body: string): Promise<{ base: string; ports: number[]; server: Server }> {
  const ports: number[] = [];
  const server = createServer((req, res) => {
    ports.push(req.socket.remotePort ?? -1);
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, ports, server };
}
const close = (s: Server) => new Promise<void>((r) => s.close(() => r()));

describe('scaleway', () => {
  it('reads every value: Afterburn attributes, hostname, keys, userdata', async () => {
    mock.reset(scwRoutes());
    const md = await scaleway.metadata(env());
    expect(md.attributes).toEqual(SCW_ATTRIBUTES);
    expect(md.hostname).toBe('frontend-0');
    expect(md.sshKeys).toEqual([KEY.a, KEY.b]);
    expect(md.networkUnits).toEqual([]);
    expect(mock.seen.map((s) => [s.method, s.path, s.query])).toEqual([['GET', '/conf', 'format=json']]);
    expect((await scaleway.userdata(env()))?.toString()).toBe('#cloud-config\nhostname: from-scaleway\n');
    expect(mock.seen.at(-1)).toMatchObject({ method: 'GET', path: '/user_data/cloud-init', query: '' });
    expect(afterburnAttributes('scaleway', md.attributes)).toEqual({
      AFTERBURN_SCALEWAY_HOSTNAME: 'frontend-0',
      AFTERBURN_SCALEWAY_INSTANCE_ID: '11111111-1111-1111-1111-111111111111',
      AFTERBURN_SCALEWAY_INSTANCE_TYPE: 'GP1-M',
      AFTERBURN_SCALEWAY_ZONE_ID: 'par1',
      AFTERBURN_SCALEWAY_IPV4_PRIVATE: '10.0.0.2',
      AFTERBURN_SCALEWAY_IPV4_PUBLIC: '93.184.216.34',
      AFTERBURN_SCALEWAY_IPV6_PUBLIC: '2001:db8::1',
    });
  });

  it.runIf(process.getuid?.() === 0)('asks user_data from a source port below 1024, another one when it is taken [root]', async () => {
    const rec = await portRecorder('#cloud-config\n');
    try {
      expect((await scaleway.userdata(env('/', { metadataUrl: rec.base })))?.toString()).toBe('#cloud-config\n');
      expect(rec.ports).toHaveLength(1);
      expect(rec.ports[0]).toBeGreaterThanOrEqual(1);
      expect(rec.ports[0]).toBeLessThan(1024);
      // A taken port: the next pick is used.
      const busy = createServer();
      let taken = 0;
      for (let p = 987; p > 900 && taken === 0; p--) {
        taken = await new Promise<number>((r) => {
          busy.once('error', () => r(0));
          busy.listen(p, '0.0.0.0', () => r(p));
        });
      }
      expect(taken).toBeGreaterThan(0);
      // The next pick: not the first request's port, which was random: that connection to the same
      // server lingers in TIME_WAIT and the kernel refuses the same source port for it again (this test
      // failed when the first pick happened to be taken - 100); and no port something listens on.
      let next = 0;
      for (let p = taken - 100; p > 800 && next === 0; p--) {
        if (rec.ports.includes(p)) continue;
        const probe = createServer();
        const free = await new Promise<boolean>((r) => {
          probe.once('error', () => r(false));
          probe.listen(p, '0.0.0.0', () => r(true));
        });
        if (free) {
          await close(probe);
          next = p;
        }
      }
      expect(next).toBeGreaterThan(0);
      const picks = [taken, next];
      try {
        const b = await lowPortRequest(`${rec.base}/x`, env(), { limit: 100, pickPort: () => picks.shift() ?? 1000 });
        expect(b?.toString()).toBe('#cloud-config\n');
        expect(rec.ports.at(-1)).toBe(next);
      } finally {
        await close(busy);
      }
    } finally {
      await close(rec.server);
    }
  });

  it.each([
    ['hostname', ['COREOS_HOSTNAME', 'COREOS_SCALEWAY_HOSTNAME']],
    ['id', ['COREOS_SCALEWAY_INSTANCE_ID']],
    ['commercial_type', ['COREOS_SCALEWAY_INSTANCE_TYPE']],
    ['location', ['COREOS_SCALEWAY_ZONE_ID']],
    ['private_ip', ['COREOS_SCALEWAY_IPV4_PRIVATE', 'COREOS_IPV4_PRIVATE']],
    ['public_ip', ['COREOS_SCALEWAY_IPV4_PUBLIC', 'COREOS_IPV4_PUBLIC']],
    ['ipv6', ['COREOS_SCALEWAY_IPV6_PUBLIC', 'COREOS_IPV6_PUBLIC']],
    ['ssh_public_keys', []],
  ])('a missing %s leaves only that out (absent or null)', async (field, gone) => {
    const want: Record<string, string> = { ...SCW_ATTRIBUTES };
    for (const k of gone) delete want[k];
    for (const absent of [true, false]) {
      const doc = scwDoc();
      if (absent) delete doc[field];
      else doc[field] = null;
      mock.reset(scwRoutes({ '/conf': json(doc) }));
      const md = await scaleway.metadata(env());
      expect(md.attributes).toEqual(want);
      expect(md.hostname).toBe(field === 'hostname' ? undefined : 'frontend-0');
      expect(md.sshKeys).toEqual(field === 'ssh_public_keys' ? [] : [KEY.a, KEY.b]);
    }
  });

  it('404 is absent: empty metadata, no userdata; an empty userdata is none', async () => {
    mock.reset({});
    expect(await scaleway.metadata(env())).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(logs).toContain('scaleway: the metadata service has no conf');
    expect(await scaleway.userdata(env())).toBeNull();
    mock.reset({ '/user_data/cloud-init': { body: '' } });
    expect(await scaleway.userdata(env())).toBeNull();
  });

  it('retries a 500, then reads (the document and the userdata)', async () => {
    mock.reset(scwRoutes({ '/conf': [{ status: 500 }, json(scwDoc())], '/user_data/cloud-init': [{ status: 503 }, { body: 'data' }] }));
    expect((await scaleway.metadata(env())).attributes).toEqual(SCW_ATTRIBUTES);
    expect(mock.hits('/conf')).toBe(2);
    expect((await scaleway.userdata(env()))?.toString()).toBe('data');
    expect(mock.hits('/user_data/cloud-init')).toBe(2);
    expect(logged(/^GET http:\/\/127\.0\.0\.1:\d+\/user_data\/cloud-init failed \(attempt 1\/3\): HTTP 503 Service Unavailable; retrying in 0\.005s$/)).toBe(true);
  });

  it('refusals fail at once with the reason: 403 (the port rule), a redirect', async () => {
    mock.reset({ '/user_data/cloud-init': { status: 403 } });
    await expect(scaleway.userdata(env())).rejects.toThrow(/^GET http:\/\/127\.0\.0\.1:\d+\/user_data\/cloud-init failed: HTTP 403 Forbidden \(Scaleway answers this only to a source port below 1024\)$/);
    mock.reset({ '/user_data/cloud-init': { status: 302, headers: { Location: 'http://example.com/' } } });
    await expect(scaleway.userdata(env())).rejects.toThrow(/failed: HTTP 302 Found \(a redirect to http:\/\/example\.com\/; redirects are not followed\)$/);
    expect(mock.hits('/user_data/cloud-init')).toBe(1);
  });

  it('a dead service is an error naming the URL after the configured tries', async () => {
    const e = env('/nonexistent-root', { metadataUrl: await deadUrl() });
    await expect(scaleway.metadata(e)).rejects.toThrow(/^GET http:\/\/127\.0\.0\.1:\d+\/conf\?format=json failed after 3 attempts: fetch failed: ECONNREFUSED$/);
    await expect(scaleway.userdata(e)).rejects.toThrow(/^GET http:\/\/127\.0\.0\.1:\d+\/user_data\/cloud-init failed after 3 attempts: connection failed: ECONNREFUSED$/);
    await expect(scaleway.checkIn!(e)).rejects.toThrow(/^scaleway: the state report "booted" failed: PATCH http:\/\/127\.0\.0\.1:\d+\/state failed after 3 attempts: connection failed: ECONNREFUSED$/);
    expect(logs.filter((l) => /\/user_data\/cloud-init failed \(attempt \d\/3\): connection failed: ECONNREFUSED/.test(l))).toHaveLength(2);
  });

  it('a service that never answers times out after the configured time', async () => {
    mock.reset({ '/user_data/cloud-init': { hang: true } });
    const e = env('/nonexistent-root', { http: { ...TEST_HTTP, tries: 1, timeoutMs: 100 } });
    await expect(scaleway.userdata(e)).rejects.toThrow(/^GET http:\/\/127\.0\.0\.1:\d+\/user_data\/cloud-init failed after 1 attempt: timed out after 100 ms$/);
  });

  it('hostile values are dropped with a log line and never written', async () => {
    const doc = scwDoc({
      hostname: 'frontend-0\n$(reboot)',
      id: '$(reboot)',
      commercial_type: 'GP1-M\nX=1',
      location: { zone_id: '../../etc' },
      private_ip: '10.0.0.2\nCOREOS_X=1',
      public_ip: { address: '93.184.216.999' },
      ipv6: { address: '93.184.216.34' },
      ssh_public_keys: [{ key: 'ssh-rsa AAAA $(reboot)' }, 'not-an-object', { key: 42 }, { key: KEY.c }, { key: `ssh-ed25519 ${'A'.repeat(300_000)}` }],
    });
    mock.reset(scwRoutes({ '/conf': json(doc) }));
    const md = await scaleway.metadata(env());
    expect(md).toEqual({ attributes: {}, hostname: undefined, sshKeys: [KEY.c], networkUnits: [] });
    for (const re of [
      /^ignoring scaleway: the hostname "frontend-0\\n\$\(reboot\)": it contains control characters/,
      /^scaleway: ignoring the instance id "\$\(reboot\)": not a single word$/,
      /^scaleway: ignoring the commercial_type "GP1-M\\nX=1": not a single word$/,
      /^scaleway: ignoring the zone_id "\.\.\/\.\.\/etc": not a single word$/,
      /^ignoring scaleway: private_ip "10\.0\.0\.2\\nCOREOS_X=1": not an IPv4 address$/,
      /^ignoring scaleway: public_ip address "93\.184\.216\.999": not an IPv4 address$/,
      /^ignoring scaleway: ipv6 address "93\.184\.216\.34": not an IPv6 address$/,
      /^scaleway: ignoring ssh_public_keys\[1\]: not an object with a "key" string$/,
      /^scaleway: ignoring ssh_public_keys\[2\]: not an object with a "key" string$/,
    ]) {
      expect(logged(re), String(re)).toBe(true);
    }
    expect(logs.filter((l) => l.startsWith('ignoring an invalid SSH key'))).toHaveLength(2);
  });

  it('huge bodies: a conf over 4 MiB and userdata over the limit are refused (declared or streamed)', async () => {
    // The declared length alone refuses the userdata (the body is never read).
    const declared = { body: 'x', headers: { 'Content-Length': String(MAX_USERDATA_BYTES + 1) } };
    mock.reset({ '/conf': { body: `{"hostname":"${'a'.repeat(4 * 1024 * 1024)}"}` }, '/user_data/cloud-init': declared });
    await expect(scaleway.metadata(env())).rejects.toThrow(/^scaleway: http:\/\/127\.0\.0\.1:\d+\/conf\?format=json is 4194319 bytes, more than the 4194304 a metadata document may be$/);
    await expect(scaleway.userdata(env())).rejects.toThrow(/^GET http:\/\/127\.0\.0\.1:\d+\/user_data\/cloud-init failed: the response is 16777217 bytes, more than the 16777216 allowed$/);
    expect(mock.hits('/user_data/cloud-init')).toBe(1);
    // Without a length, the body is counted as it comes (a small limit here, the same code).
    mock.reset({ '/big': (): Reply => ({ body: 'a'.repeat(5000) }) });
    await expect(lowPortRequest(`${mock.base}/big`, env(), { limit: 4096 })).rejects.toThrow(/^GET http:\/\/127\.0\.0\.1:\d+\/big failed: the response is larger than 4096 bytes$/);
    expect(mock.hits('/big')).toBe(1);
  });
});

describe('scaleway check-in (state)', () => {
  it('PATCHes state with {"state_detail":"booted"}: the exact request', async () => {
    mock.reset(scwRoutes());
    await scaleway.checkIn!(env());
    expect(mock.seen).toHaveLength(1);
    const req = mock.seen[0]!;
    expect([req.method, req.path, req.query]).toEqual(['PATCH', '/state', '']);
    expect(req.headers['content-type']).toBe('application/json');
    expect(req.headers['content-length']).toBe('25');
    expect(req.body.toString()).toBe('{"state_detail":"booted"}');
    expect(logs).toContain('scaleway: reported the state "booted"');
  });

  it('retries a 500, then succeeds', async () => {
    mock.reset(scwRoutes({ 'PATCH /state': [{ status: 500 }, { status: 200 }] }));
    await scaleway.checkIn!(env());
    expect(mock.hits('/state')).toBe(2);
    expect(mock.seen.every((s) => s.body.toString() === '{"state_detail":"booted"}')).toBe(true);
    expect(logged(/^PATCH http:\/\/127\.0\.0\.1:\d+\/state failed \(attempt 1\/3\): HTTP 500 Internal Server Error; retrying/)).toBe(true);
  });

  it('fails with one line: 500 to the end, 400 at once', async () => {
    mock.reset(scwRoutes({ 'PATCH /state': { status: 500 } }));
    await expect(scaleway.checkIn!(env())).rejects.toThrow(/^scaleway: the state report "booted" failed: PATCH http:\/\/127\.0\.0\.1:\d+\/state failed after 3 attempts: HTTP 500 Internal Server Error$/);
    expect(mock.hits('/state')).toBe(3);
    mock.reset(scwRoutes({ 'PATCH /state': { status: 400 } }));
    await expect(scaleway.checkIn!(env())).rejects.toThrow(/^scaleway: the state report "booted" failed: PATCH http:\/\/127\.0\.0\.1:\d+\/state failed: HTTP 400 Bad Request$/);
    expect(mock.hits('/state')).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------
// The agent's subcommands, in-process, on temporary roots

describe('oem-agent on packet and scaleway', () => {
  it('packet: metadata (coreos and afterburn names), hostname, network, userdata', async () => {
    const root = await rootWithDns();
    mock.reset(packetRoutes());
    const m = await cli('metadata', root, 'packet');
    expect(m.err).toBe('');
    expect(m.code).toBe(0);
    const want = PACKET_ATTRIBUTES() as Record<string, string>;
    expect(await readFile(join(root, 'run/coreos/metadata'), 'utf8')).toBe(
      Object.keys(want)
        .sort()
        .map((k) => `${k}=${want[k]}\n`)
        .join(''),
    );
    const a = await cli('metadata', root, 'packet', '--format', 'afterburn');
    expect(a.code).toBe(0);
    expect(await readFile(join(root, 'run/metadata/afterburn'), 'utf8')).toBe(
      [
        'AFTERBURN_PACKET_HOSTNAME=metal-1.example',
        'AFTERBURN_PACKET_IPV4_PRIVATE_0=10.99.182.129',
        'AFTERBURN_PACKET_IPV4_PRIVATE_GATEWAY_0=10.99.182.128',
        'AFTERBURN_PACKET_IPV4_PUBLIC_0=147.75.104.33',
        'AFTERBURN_PACKET_IPV4_PUBLIC_GATEWAY_0=147.75.104.32',
        'AFTERBURN_PACKET_IPV6_PUBLIC_0=2604:1380:1:4d00::1',
        'AFTERBURN_PACKET_IPV6_PUBLIC_GATEWAY_0=2604:1380:1:4d00::',
        `AFTERBURN_PACKET_PHONE_HOME_URL=${mock.base}${PHONE_HOME}`,
        'AFTERBURN_PACKET_PLAN=c3.small.x86',
        '',
      ].join('\n'),
    );
    expect((await cli('hostname', root, 'packet')).code).toBe(0);
    expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe('metal-1.example\n');
    const n = await cli('network', root, 'packet');
    expect(n.code).toBe(0);
    const dir = join(root, 'etc/systemd/network');
    expect((await readdir(dir)).sort()).toEqual(PACKET_UNIT_NAMES);
    expect(await readFile(join(dir, '10-oem-0-bond0.netdev'), 'utf8')).toBe(BOND_NETDEV);
    expect(await readFile(join(dir, '10-oem-0-bond0.network'), 'utf8')).toBe(BOND_NETWORK);
    expect(await readFile(join(dir, '10-oem-2-0cc47ae13dd1.network'), 'utf8')).toBe(slaveUnit(MAC1));
    expect(((await stat(join(dir, '10-oem-0-bond0.netdev'))).mode & 0o7777).toString(8)).toBe('644');
    const u = await cli('userdata', root, 'packet');
    expect(u.code).toBe(0);
    expect(await readFile(join(root, 'var/lib/oem-agent/userdata.raw'), 'utf8')).toBe('#cloud-config\nhostname: from-userdata\n');
    // Nothing but the mock was asked.
    expect(new Set(mock.seen.map((s) => s.path))).toEqual(new Set(['/metadata', '/userdata']));
  });

  it.runIf(process.getuid?.() === 0)('packet: ssh-keys for core, and check-in [root]', async () => {
    const root = await makeRoot();
    mock.reset(packetRoutes());
    const k = await cli('ssh-keys', root, 'packet');
    expect(k.err).toBe('');
    expect(k.code).toBe(0);
    expect(await readFile(join(root, 'home/core/.ssh/authorized_keys.d/coreos-metadata'), 'utf8')).toBe(`${KEY.a}\n${KEY.b}\n`);
    expect(await readFile(join(root, 'home/core/.ssh/authorized_keys'), 'utf8')).toBe(`# auto-generated by update-ssh-keys\n${KEY.a}\n${KEY.b}\n`);
    mock.reset(packetRoutes());
    const c = await cli('check-in', root, 'packet');
    expect(c.err).toBe('');
    expect(c.code).toBe(0);
    expect(c.out).toContain('oem-agent: packet: checked in\n');
    expect(mock.seen.map((s) => `${s.method} ${s.path}`)).toEqual(['GET /metadata', `POST ${PHONE_HOME}`]);
    // A failing phone-home: exit 1 (network), one line.
    mock.reset(packetRoutes({ [`POST ${PHONE_HOME}`]: { status: 500 } }));
    const f = await cli('check-in', root, 'packet');
    expect(f.code).toBe(1);
    expect(f.err).toMatch(/^oem-agent: error: packet: the phone-home failed: POST http:\/\/127\.0\.0\.1:\d+\/phone-home failed after 3 attempts: HTTP 500 Internal Server Error\n$/);
  });

  it.runIf(process.getuid?.() === 0)('scaleway: metadata (both formats), hostname, ssh-keys, userdata, check-in [root]', async () => {
    const root = await makeRoot();
    mock.reset(scwRoutes());
    const m = await cli('metadata', root, 'scaleway');
    expect(m.err).toBe('');
    expect(m.code).toBe(0);
    expect(await readFile(join(root, 'run/coreos/metadata'), 'utf8')).toBe(
      Object.entries(SCW_ATTRIBUTES)
        .sort(([x], [y]) => (x < y ? -1 : 1))
        .map(([k, v]) => `${k}=${v}\n`)
        .join(''),
    );
    expect((await cli('metadata', root, 'scaleway', '--format', 'afterburn')).code).toBe(0);
    expect(await readFile(join(root, 'run/metadata/afterburn'), 'utf8')).toBe(
      [
        'AFTERBURN_SCALEWAY_HOSTNAME=frontend-0',
        'AFTERBURN_SCALEWAY_INSTANCE_ID=11111111-1111-1111-1111-111111111111',
        'AFTERBURN_SCALEWAY_INSTANCE_TYPE=GP1-M',
        'AFTERBURN_SCALEWAY_IPV4_PRIVATE=10.0.0.2',
        'AFTERBURN_SCALEWAY_IPV4_PUBLIC=93.184.216.34',
        'AFTERBURN_SCALEWAY_IPV6_PUBLIC=2001:db8::1',
        'AFTERBURN_SCALEWAY_ZONE_ID=par1',
        '',
      ].join('\n'),
    );
    expect((await cli('hostname', root, 'scaleway')).code).toBe(0);
    expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe('frontend-0\n');
    expect((await cli('ssh-keys', root, 'scaleway')).code).toBe(0);
    expect(await readFile(join(root, 'home/core/.ssh/authorized_keys.d/coreos-metadata'), 'utf8')).toBe(`${KEY.a}\n${KEY.b}\n`);
    const n = await cli('network', root, 'scaleway');
    expect(n.code).toBe(0);
    expect(n.out).toContain('scaleway: no network configuration in the metadata (DHCP configures the network)');
    expect((await cli('userdata', root, 'scaleway')).code).toBe(0);
    expect(await readFile(join(root, 'var/lib/oem-agent/userdata.raw'), 'utf8')).toBe('#cloud-config\nhostname: from-scaleway\n');
    mock.reset(scwRoutes());
    const c = await cli('check-in', root, 'scaleway');
    expect(c.err).toBe('');
    expect(c.code).toBe(0);
    expect(c.out).toContain('oem-agent: scaleway: checked in\n');
    expect(mock.seen.map((s) => [s.method, s.path, s.body.toString()])).toEqual([['PATCH', '/state', '{"state_detail":"booted"}']]);
    mock.reset(scwRoutes({ 'PATCH /state': { status: 500 } }));
    const f = await cli('check-in', root, 'scaleway');
    expect(f.code).toBe(1);
    expect(f.err).toMatch(/^oem-agent: error: scaleway: the state report "booted" failed: PATCH .*\/state failed after 3 attempts: HTTP 500 Internal Server Error\n$/);
  });
});
