/**
 * Azure and Azure Stack: ovf-env.xml on the provisioning DVD (a directory under a temporary root),
 * the WireServer (goal state, shared configuration, the Ready health report) and IMDS, both served
 * by one MetadataMock on 127.0.0.1 in the documented formats; a WireServer found through a networkd
 * lease's DHCP option 245 (a port-80 listener on a private loopback address, relayed to the mock);
 * then absent values, retries, dead services and hostile documents; and oem-agent check-in and
 * metadata end to end.
 *
 * Every env and CLI call sets metadataUrl and wireServerUrl (or a lease) to local addresses: nothing
 * here talks to 168.63.129.16 or 169.254.169.254. Runs as root (the port-80 listener, file owners).
 */
import { mkdir, mkdtemp, readFile, symlink, writeFile } from 'node:fs/promises';
import { createServer as createTcpServer, connect, type Server as TcpServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { OemError } from '../src/shared/errors.js';
import { parseImdsPublicKeys, parseOvfEnv, parseXml, provider as azure } from '../oem/providers/azure.js';
import { identityVmName, provider as azurestack } from '../oem/providers/azurestack.js';
import { escapeXml, healthReport, leaseOption245, option245Address, parseGoalState, parseSharedConfig, wireServerBase } from '../oem/providers/wireserver.js';
import { agent, agentArgs, deadUrl, edKey, type Route, type Seen, useMetadataMock } from './helpers/metadata-mock.js';

// Real public keys (OpenSSH ssh-keygen), as in ssh-keys.test.ts.
const ED = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIENQF7ZfEWz/nirY09uAuYtaLzkukGx70zg/7N+Yf5/f alice@laptop';
const RSA =
  'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC9lPnVqryTRWw4mvshR/8IZ12K2pCycUlnOjWMs1PLyZQPqI1+ew0wui7j4uK0nfpnCK/if86QNwQC9SqonI5+cZouk1N5EBUH1k3HcVRokBwtcwmLBhtxsYXU3V5I3izjJZd3c750Za7CvpBYNL+UUlfjDiyJuPwm3PqKuxwuApW3e24DggnMBUhxWRwF8zDducWRl+FeShMyUvTbQk2lOcx396fc9fAv78O36xOaFcoAGitwJaVrWk4jJzIs3B0fkWqmm1TpUV0gIdl1wQdmQ1N6YCJhT8FVqdE2WOO3r42XeRW5A3sv6gX1JAnsWEQpmf5dmHbbmrE/q7VUA4zH bob@desk';
const IMDS_KEY = edKey('from-imds@example');
const CLOUD_CONFIG = '#cloud-config\nhostname: from-userdata\nssh_authorized_keys:\n  - ssh-ed25519 AAAA...\n';
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

/** env(root, extra): IMDS and the WireServer are the mock (unless `extra` says otherwise). */
const { mock, work, logs, env, makeRoot } = useMetadataMock('oem-azure-test-', (m) => ({ wireServerUrl: m.base }));

async function put(root: string, path: string, content: string | Buffer): Promise<void> {
  const host = join(root, path);
  await mkdir(dirname(host), { recursive: true });
  await writeFile(host, content);
}

async function link(root: string, path: string, target: string): Promise<void> {
  const host = join(root, path);
  await mkdir(dirname(host), { recursive: true });
  await symlink(target, host);
}

// ---------------------------------------------------------------------------------------------
// Documents in the platforms' formats

/** An ovf-env.xml as Azure writes it on the provisioning DVD. */
function ovfEnv(inner: { hostname?: string; customData?: string; keys?: string }): string {
  return `<?xml version="1.0" encoding="utf-8"?>
<ns0:Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
    xmlns:ns0="http://schemas.dmtf.org/ovf/environment/1"
    xmlns:ns1="http://schemas.microsoft.com/windowsazure"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <ns1:ProvisioningSection>
    <ns1:Version>1.0</ns1:Version>
    <ns1:LinuxProvisioningConfigurationSet>
      <ns1:ConfigurationSetType>LinuxProvisioningConfiguration</ns1:ConfigurationSetType>
      ${inner.hostname === undefined ? '' : `<ns1:HostName>${inner.hostname}</ns1:HostName>`}
      <ns1:UserName>core</ns1:UserName>
      <ns1:UserPassword />
      ${inner.customData === undefined ? '' : `<ns1:CustomData>${inner.customData}</ns1:CustomData>`}
      <ns1:DisableSshPasswordAuthentication>true</ns1:DisableSshPasswordAuthentication>
      ${inner.keys ?? ''}
    </ns1:LinuxProvisioningConfigurationSet>
  </ns1:ProvisioningSection>
  <ns1:PlatformSettingsSection>
    <ns1:Version>1.0</ns1:Version>
    <ns1:PlatformSettings>
      <ns1:KmsServerHostname>kms.core.windows.net</ns1:KmsServerHostname>
      <ns1:ProvisionGuestAgent>false</ns1:ProvisionGuestAgent>
      <ns1:GuestAgentPackageName xsi:nil="true" />
    </ns1:PlatformSettings>
  </ns1:PlatformSettingsSection>
</ns0:Environment>
`;
}

const pubKey = (p: { fingerprint?: string; path?: string; value?: string }) =>
  `<ns1:PublicKey>${p.fingerprint === undefined ? '' : `<ns1:Fingerprint>${p.fingerprint}</ns1:Fingerprint>`}${
    p.path === undefined ? '' : `<ns1:Path>${p.path}</ns1:Path>`
  }${p.value === undefined ? '' : `<ns1:Value>${p.value}</ns1:Value>`}</ns1:PublicKey>`;

const keysXml = (...values: string[]) => `<ns1:SSH><ns1:PublicKeys>${values.map((value) => pubKey({ path: '/home/core/.ssh/authorized_keys', value })).join('')}</ns1:PublicKeys></ns1:SSH>`;

const CID = 'a511aa6d-29e7-4f53-8788-55655dfe848f';
const IID = 'f6cd1d7ef1644557b9059345e5ba890c.flatcar-vm1';
/** Where the goal state says the shared configuration is (URL-encoded, as the WireServer writes it). */
const SC_PATH = `/machine/${CID}/f6cd1d7ef1644557b9059345e5ba890c.flatcar%2Dvm1`;
const SC_QUERY = 'comp=config&type=sharedConfig&incarnation=1';
/** The goal state's SharedConfig, naming the real WireServer: it must be asked of the one in use. */
const SC_URL = `http://168.63.129.16:80${SC_PATH}?comp=config&amp;type=sharedConfig&amp;incarnation=1`;

/** A goal state as the WireServer gives it (values are put in as they are: XML, entities and all). */
function goalState(o: { incarnation?: string; containerId?: string; instanceId?: string | null; sharedConfig?: string | null } = {}): string {
  const config = o.sharedConfig === null ? '' : `<SharedConfig>${o.sharedConfig ?? SC_URL}</SharedConfig>`;
  const role =
    o.instanceId === null
      ? ''
      : `<RoleInstance>
        <InstanceId>${o.instanceId ?? IID}</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>http://168.63.129.16:80/machine/${CID}/x?comp=config&amp;type=hostingEnvironmentConfig&amp;incarnation=1</HostingEnvironmentConfig>
          ${config}
          <ExtensionsConfig>http://168.63.129.16:80/machine/${CID}/x?comp=config&amp;type=extensionsConfig&amp;incarnation=1</ExtensionsConfig>
          <FullConfig>http://168.63.129.16:80/machine/${CID}/x?comp=config&amp;type=fullConfig&amp;incarnation=1</FullConfig>
          <Certificates>http://168.63.129.16:80/machine/${CID}/x?comp=certificates&amp;incarnation=1</Certificates>
          <ConfigName>${CID}.0.${CID}.0.flatcar-vm1.1.xml</ConfigName>
        </Configuration>
      </RoleInstance>`;
  return `<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2012-11-30</Version>
  <Incarnation>${o.incarnation ?? '42'}</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
    <LBProbePorts><Port>16001</Port></LBProbePorts>
    <ExpectHealthReport>FALSE</ExpectHealthReport>
  </Machine>
  <Container>
    <ContainerId>${o.containerId ?? CID}</ContainerId>
    <RoleInstanceList>
      ${role}
    </RoleInstanceList>
  </Container>
</GoalState>
`;
}

/** The health report the WireServer must receive for `goalState()` (written out here, not built by the module). */
const READY = (incarnation = '42', containerId = CID, instanceId = IID) => `<?xml version="1.0" encoding="utf-8"?>
<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <GoalStateIncarnation>${incarnation}</GoalStateIncarnation>
  <Container>
    <ContainerId>${containerId}</ContainerId>
    <RoleInstanceList>
      <Role>
        <InstanceId>${instanceId}</InstanceId>
        <Health>
          <State>Ready</State>
        </Health>
      </Role>
    </RoleInstanceList>
  </Container>
</Health>
`;

type Endpoint = { name: string; address: string; lb?: string };
const SSH_ENDPOINT: Endpoint = { name: 'ssh', address: '10.0.0.4:22', lb: '40.112.1.2:22' };

/** A shared configuration: `instance` is <Incarnation instance>, the Instance has `id`, `address`, `endpoints`. */
function sharedConfig(o: { instance?: string; id?: string; address?: string; endpoints?: Endpoint[] } = {}): string {
  const eps = (o.endpoints ?? [{ name: 'openInternalEndpoint', address: '10.0.0.4' }, SSH_ENDPOINT])
    .map(
      (e) =>
        `<Endpoint name="${e.name}" address="${e.address}" protocol="tcp"${e.lb === undefined ? '' : ` hostName="flatcar-vm1ContractContract" isPublic="true" loadBalancedPublicAddress="${e.lb}"`} enableDirectServerReturn="false" isDirectAddress="false" disableStealthMode="false"><LocalPorts><LocalPortRange from="22" to="22" /></LocalPorts></Endpoint>`,
    )
    .join('\n        ');
  return `<?xml version="1.0" encoding="utf-8"?>
<SharedConfig version="1.0.0.0" goalStateIncarnation="1">
  <Deployment name="${CID.replace(/-/g, '')}" guid="{${CID}}" incarnation="0" isNonCancellableTopologyChangeEnabled="false">
    <Service name="flatcar-vm1" guid="{00000000-0000-0000-0000-000000000000}" />
    <ServiceInstance name="${CID.replace(/-/g, '')}.0" guid="{b7ea5a37-8e2f-4a3e-9c1a-5e2d1e9f1a11}" />
  </Deployment>
  <Incarnation number="1" instance="${o.instance ?? 'flatcar-vm1'}" guid="{a0faca3b-0b3e-4e0f-8a3c-0b6f2a8c0d1e}" />
  <Role guid="{2f3b0e8a-3c1a-2c3e-1f6b-0a1d0b2c3d4e}" name="flatcar-vm1" settleTimeSeconds="0" />
  <LoadBalancerSettings timeoutSeconds="0" waitLoadBalancerProbeCount="8"><Probes><Probe name="D41D8CD98F00B204E9800998ECF8427E" /></Probes></LoadBalancerSettings>
  <OutputEndpoints><Endpoint name="flatcar-vm1:openInternalEndpoint" type="SFS"><Target instance="flatcar-vm1" endpoint="openInternalEndpoint" /></Endpoint></OutputEndpoints>
  <Instances>
    <Instance id="${o.id ?? 'flatcar-vm1'}" address="${o.address ?? '10.0.0.4'}">
      <FaultDomains randomId="0" updateId="0" updateCount="0" />
      <InputEndpoints>
        ${eps}
      </InputEndpoints>
    </Instance>
  </Instances>
</SharedConfig>
`;
}

const VMSIZE = '/metadata/instance/compute/vmSize';
const NAME = '/metadata/instance/compute/name';
const KEYS = '/metadata/instance/compute/publicKeys';
const IDENTITY = '/Microsoft.Compute/identity';

/** A WireServer and IMDS with everything; `over` replaces routes. */
function azureRoutes(over: Record<string, Route> = {}): Record<string, Route> {
  return {
    '/machine/': (req: Seen) => (req.query === 'comp=goalstate' ? { body: goalState(), headers: { 'Content-Type': 'text/xml; charset=utf-8' } } : { status: 400 }),
    'POST /machine/': (req: Seen) => (req.query === 'comp=health' ? { status: 200 } : { status: 400 }),
    [SC_PATH]: (req: Seen) => (req.query === SC_QUERY ? { body: sharedConfig() } : { status: 400 }),
    [VMSIZE]: { body: 'Standard_D2s_v3' },
    [NAME]: { body: 'vm-from-imds' },
    [KEYS]: { body: JSON.stringify([{ keyData: IMDS_KEY, path: '/home/core/.ssh/authorized_keys' }]) },
    ...over,
  };
}

/** A WireServer and IMDS with nothing for the attributes: only ovf-env.xml counts. */
const quietRoutes = () => azureRoutes({ '/machine/': { body: goalState({ sharedConfig: null }) }, [VMSIZE]: { status: 404 }, [NAME]: { status: 404 }, [KEYS]: { status: 404 } });

const requests = (method: string, path: string) => mock.seen.filter((s) => s.method === method && s.path === path);
const healthPosts = () => requests('POST', '/machine/');

// ---------------------------------------------------------------------------------------------
// ovf-env.xml (what the module did before the WireServer and IMDS; with nothing from those)

describe('azure: ovf-env.xml', () => {
  beforeEach(() => mock.reset(quietRoutes()));

  it('reads hostname, keys given by value, and base64 CustomData from ovf-env.xml', async () => {
    const e = env(await makeRoot());
    const enc = b64(CLOUD_CONFIG);
    const xml = ovfEnv({
      hostname: 'flatcar-vm1',
      // Azure may wrap the base64.
      customData: `${enc.slice(0, 20)}\n        ${enc.slice(20)}`,
      keys: `<ns1:SSH><ns1:PublicKeys>${pubKey({ fingerprint: 'EB0C0AB4B2D5FC35F2F0658D19F44C8283E2DD62', path: '/home/core/.ssh/authorized_keys', value: ED })}${pubKey({
        fingerprint: '5AD3B8F6F2EE8B1D6F6E4E7E5D5D0E1D2C3B4A59',
        path: '/home/core/.ssh/authorized_keys',
      })}</ns1:PublicKeys></ns1:SSH>`,
    });
    await put(e.root, '/media/azure/ovf-env.xml', xml);
    const md = await azure.metadata(e);
    expect(md.hostname).toBe('flatcar-vm1');
    expect(md.attributes).toEqual({ COREOS_HOSTNAME: 'flatcar-vm1' });
    expect(md.sshKeys).toEqual([ED]);
    expect(md.networkUnits).toEqual([]);
    expect((await azure.userdata(e))?.toString()).toBe(CLOUD_CONFIG);
  });

  it('matches elements by namespace, whatever the prefix', () => {
    const xml = `<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:wa="http://schemas.microsoft.com/windowsazure">
      <wa:ProvisioningSection><LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure">
        <HostName>default-ns</HostName>
        <other:CustomData xmlns:other="urn:not-azure">${b64('wrong')}</other:CustomData>
        <CustomData><![CDATA[${b64('right')}]]></CustomData>
      </LinuxProvisioningConfigurationSet></wa:ProvisioningSection></Environment>`;
    const ovf = parseOvfEnv(xml);
    expect(ovf.hostname).toBe('default-ns');
    expect(Buffer.from(ovf.customData ?? '', 'base64').toString()).toBe('right');
  });

  it('gives no keys when Azure only gives fingerprints, and no userdata without CustomData', async () => {
    const e = env(await makeRoot(), { azureDvd: '/mnt/dvd' });
    await put(e.root, '/mnt/dvd/ovf-env.xml', ovfEnv({ hostname: 'h1', keys: `<ns1:SSH><ns1:PublicKeys>${pubKey({ fingerprint: 'AB12', path: '/home/core/.ssh/authorized_keys' })}</ns1:PublicKeys></ns1:SSH>` }));
    expect(await azure.metadata(e)).toEqual({ attributes: { COREOS_HOSTNAME: 'h1' }, hostname: 'h1', sshKeys: [], networkUnits: [] });
    expect(await azure.userdata(e)).toBeNull();
    // An empty CustomData element is no userdata either.
    await put(e.root, '/mnt/dvd/ovf-env.xml', ovfEnv({ customData: '' }));
    expect(await azure.userdata(e)).toBeNull();
  });

  it('is empty when there is no ovf-env.xml (and the services have nothing)', async () => {
    const e = env(await makeRoot());
    expect(await azure.metadata(e)).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await azure.userdata(e)).toBeNull();
    expect(logs.join('\n')).toMatch(/azure: no ovf-env\.xml in \/media\/azure/);
  });

  it('refuses DOCTYPEs, entities and malformed XML', async () => {
    const e = env(await makeRoot());
    const bad: [string, RegExp][] = [
      [`<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Environment>&e;</Environment>`, /DOCTYPE/],
      [`<Environment><x>&e;</x></Environment>`, /unknown entity/],
      [`<Environment><a></b></Environment>`, /closes/],
      [`<Environment><a>`, /not closed/],
      [`<Environment/><Environment/>`, /more than one root/],
      [`<ns1:Environment>x</ns1:Environment>`, /undeclared namespace prefix/],
      [`not xml at all`, /outside the root/],
      [`<Environment a="1" a="2"/>`, /twice/],
      ['', /no root element/],
    ];
    for (const [xml, why] of bad) {
      await put(e.root, '/media/azure/ovf-env.xml', xml);
      await expect(azure.metadata(e), xml).rejects.toThrow(why);
    }
    expect(() => parseXml('<a>' + '<b>'.repeat(100) + '</b>'.repeat(100) + '</a>')).toThrow(/nested/);
  });

  it('refuses CustomData that is not base64', async () => {
    const e = env(await makeRoot());
    await put(e.root, '/media/azure/ovf-env.xml', ovfEnv({ customData: '!!! not base64 !!!' }));
    await expect(azure.userdata(e)).rejects.toThrow(/CustomData is not valid base64/);
  });

  it('drops a hostname with a newline and keys that are not keys, with log lines', async () => {
    const e = env(await makeRoot());
    const keys = `<ns1:SSH><ns1:PublicKeys>${pubKey({ path: '/home/core/.ssh/authorized_keys', value: '../../../etc/passwd' })}${pubKey({
      path: '/root/.ssh/authorized_keys',
      value: `${RSA}&#10;ssh-rsa AAAA/etc/shadow`,
    })}</ns1:PublicKeys></ns1:SSH>`;
    await put(e.root, '/media/azure/ovf-env.xml', ovfEnv({ hostname: 'evil&#10;host', keys }));
    const md = await azure.metadata(e);
    expect(md.hostname).toBeUndefined();
    expect(md.attributes).toEqual({});
    expect(md.sshKeys).toEqual([RSA]);
    const log = logs.join('\n');
    expect(log).toMatch(/HostName "evil\\nhost"/);
    expect(log).toMatch(/invalid SSH key.*etc\/passwd/);
    expect(log).toMatch(/invalid SSH key.*etc\/shadow/);
  });

  it('never follows a symlink out of the root', async () => {
    const outside = await mkdtemp(join(work, 'outside-'));
    await writeFile(join(outside, 'ovf-env.xml'), ovfEnv({ hostname: 'outside', customData: b64('outside') }));
    // The DVD directory itself is a link out: absolute, then relative with too many `..`.
    for (const target of [outside, `../../../../../../../../..${outside}`]) {
      const e = env(await makeRoot());
      await link(e.root, '/media/azure', target);
      expect(await azure.userdata(e)).toBeNull();
      expect((await azure.metadata(e)).hostname).toBeUndefined();
    }
    // A link on the DVD to a file outside it: resolved inside the DVD, where there is none.
    const e = env(await makeRoot());
    await put(e.root, '/secret.xml', ovfEnv({ hostname: 'secret' }));
    await link(e.root, '/media/azure/ovf-env.xml', '/secret.xml');
    expect(await azure.userdata(e)).toBeNull();
    // A link inside the root that stays inside is followed (as a chroot would).
    const e2 = env(await makeRoot());
    await put(e2.root, '/srv/azure/ovf-env.xml', ovfEnv({ hostname: 'inside' }));
    await link(e2.root, '/media/azure', '/srv/azure');
    expect((await azure.metadata(e2)).hostname).toBe('inside');
  });
});

// ---------------------------------------------------------------------------------------------
// Attributes: the WireServer's shared configuration and IMDS

describe('azure: attributes (WireServer shared configuration, IMDS)', () => {
  it("has Afterburn's attributes, the ovf-env.xml hostname, and the keys of both", async () => {
    const e = env(await makeRoot());
    await put(e.root, '/media/azure/ovf-env.xml', ovfEnv({ hostname: 'flatcar-vm1', keys: keysXml(ED, IMDS_KEY) }));
    mock.reset(azureRoutes());
    const md = await azure.metadata(e);
    expect(md.attributes).toEqual({
      COREOS_AZURE_IPV4_DYNAMIC: '10.0.0.4',
      COREOS_AZURE_IPV4_VIRTUAL: '40.112.1.2',
      COREOS_AZURE_VMSIZE: 'Standard_D2s_v3',
      COREOS_IPV4_PRIVATE: '10.0.0.4',
      COREOS_IPV4_PUBLIC: '40.112.1.2',
      COREOS_HOSTNAME: 'flatcar-vm1',
    });
    expect(md.hostname).toBe('flatcar-vm1');
    // ovf-env.xml's keys first, then IMDS's, each once.
    expect(md.sshKeys).toEqual([ED, IMDS_KEY]);
    // The WireServer: the goal state, then the shared configuration it names, asked of the WireServer
    // in use (the goal state names 168.63.129.16), with the protocol headers.
    const wire = mock.seen.filter((s) => s.path.startsWith('/machine/'));
    expect(wire.map((s) => `${s.method} ${s.path}?${s.query}`)).toEqual(['GET /machine/?comp=goalstate', `GET ${SC_PATH}?${SC_QUERY}`]);
    for (const s of wire) expect(s.headers).toMatchObject({ 'x-ms-version': '2012-11-30', 'x-ms-agent-name': 'com.coreos.afterburn' });
    expect(logs.join('\n')).toMatch(/the goal state names the shared configuration at 168\.63\.129\.16; asking the WireServer at 127\.0\.0\.1:\d+/);
    // IMDS: Afterburn's URLs, with Metadata: true; the name is not asked for when ovf-env.xml has one.
    const imds = mock.seen.filter((s) => !s.path.startsWith('/machine/'));
    expect(imds.map((s) => `${s.path}?${s.query}`).sort()).toEqual([`${KEYS}?api-version=2021-02-01`, `${VMSIZE}?api-version=2017-08-01&format=text`]);
    for (const s of imds) expect(s.headers.metadata).toBe('true');
  });

  it('takes the hostname from IMDS when ovf-env.xml has none', async () => {
    const e = env(await makeRoot());
    mock.reset(azureRoutes());
    const md = await azure.metadata(e);
    expect(md.hostname).toBe('vm-from-imds');
    expect(md.attributes.COREOS_HOSTNAME).toBe('vm-from-imds');
    expect(requests('GET', NAME).map((s) => s.query)).toEqual(['api-version=2017-08-01&format=text']);
    expect(md.sshKeys).toEqual([IMDS_KEY]);
  });

  it('leaves out each attribute the platform does not give', async () => {
    const root = await makeRoot();
    const attrs = async (over: Record<string, Route>) => {
      mock.reset(azureRoutes(over));
      logs.length = 0;
      return (await azure.metadata(env(root))).attributes;
    };
    const all = { COREOS_AZURE_IPV4_DYNAMIC: '10.0.0.4', COREOS_AZURE_IPV4_VIRTUAL: '40.112.1.2', COREOS_AZURE_VMSIZE: 'Standard_D2s_v3', COREOS_IPV4_PRIVATE: '10.0.0.4', COREOS_IPV4_PUBLIC: '40.112.1.2', COREOS_HOSTNAME: 'vm-from-imds' };
    const without = (...keys: string[]) => Object.fromEntries(Object.entries(all).filter(([k]) => !keys.includes(k)));
    const noAddresses = without('COREOS_AZURE_IPV4_DYNAMIC', 'COREOS_AZURE_IPV4_VIRTUAL', 'COREOS_IPV4_PRIVATE', 'COREOS_IPV4_PUBLIC');
    const noVirtual = without('COREOS_AZURE_IPV4_VIRTUAL', 'COREOS_IPV4_PUBLIC');

    expect(await attrs({})).toEqual(all);
    // No VM size, no name (404s and empty answers).
    expect(await attrs({ [VMSIZE]: { status: 404 } })).toEqual(without('COREOS_AZURE_VMSIZE'));
    expect(await attrs({ [VMSIZE]: { body: ' \n' }, [NAME]: { status: 404 } })).toEqual(without('COREOS_AZURE_VMSIZE', 'COREOS_HOSTNAME'));
    // No public endpoint: no virtual address.
    expect(await attrs({ [SC_PATH]: { body: sharedConfig({ endpoints: [{ name: 'openInternalEndpoint', address: '10.0.0.4' }] }) } })).toEqual(noVirtual);
    // The goal state names no shared configuration; the WireServer has none; it has no such instance.
    expect(await attrs({ '/machine/': { body: goalState({ sharedConfig: null }) } })).toEqual(noAddresses);
    expect(logs.join('\n')).toMatch(/the goal state names no shared configuration/);
    expect(await attrs({ [SC_PATH]: { status: 404 } })).toEqual(noAddresses);
    expect(logs.join('\n')).toMatch(/no shared configuration \(HTTP 404\)/);
    expect(await attrs({ [SC_PATH]: { body: sharedConfig({ instance: 'another-vm' }) } })).toEqual(noAddresses);
    expect(logs.join('\n')).toMatch(/has no Instance "another-vm"/);
    // No public keys from IMDS.
    mock.reset(azureRoutes({ [KEYS]: { status: 404 } }));
    expect((await azure.metadata(env(root))).sshKeys).toEqual([]);
  });

  it('drops hostile values, each with a log line', async () => {
    const root = await makeRoot();
    const run = async (over: Record<string, Route>) => {
      mock.reset(azureRoutes(over));
      logs.length = 0;
      const md = await azure.metadata(env(root));
      return { md, log: logs.join('\n') };
    };
    // An address with a newline, a load-balanced address that is markup: dropped.
    let r = await run({ [SC_PATH]: { body: sharedConfig({ address: '10.0.0.4&#10;COREOS_X=1', endpoints: [{ name: 'ssh', address: '10.0.0.4:22', lb: '&lt;script&gt;:22' }] }) } });
    expect(r.md.attributes.COREOS_AZURE_IPV4_DYNAMIC).toBeUndefined();
    expect(r.md.attributes.COREOS_AZURE_IPV4_VIRTUAL).toBeUndefined();
    expect(r.log).toMatch(/azure: ignoring the shared configuration's instance address "10\.0\.0\.4\\nCOREOS_X=1": not an IPv4 address/);
    expect(r.log).toMatch(/ignoring the loadBalancedPublicAddress "<script>:22"/);
    // IPv6, a name, an out-of-range port: skipped; the last usable IPv4 one counts (as in Afterburn).
    r = await run({
      [SC_PATH]: {
        body: sharedConfig({
          endpoints: [
            { name: 'a', address: '10.0.0.4:80', lb: '40.112.1.1:80' },
            { name: 'b', address: '10.0.0.4:443', lb: '[2001:db8::1]:443' },
            { name: 'c', address: '10.0.0.4:22', lb: '40.112.1.3:22' },
            { name: 'd', address: '10.0.0.4:8080', lb: 'evil.example.com:8080' },
            { name: 'e', address: '10.0.0.4:9', lb: '40.112.1.4:99999' },
          ],
        }),
      },
    });
    expect(r.md.attributes.COREOS_AZURE_IPV4_VIRTUAL).toBe('40.112.1.3');
    // A VM size that is not one (newline, shell, huge), a name with a newline.
    for (const body of ['Standard_D2s_v3\nCOREOS_X=1', "Standard'; rm -rf /", 'S'.repeat(300 * 1024)]) {
      r = await run({ [VMSIZE]: { body }, [NAME]: { body: 'vm\nevil' } });
      expect(r.md.attributes.COREOS_AZURE_VMSIZE).toBeUndefined();
      expect(r.md.hostname).toBeUndefined();
      expect(r.log).toMatch(/ignoring the VM size|ignoring the VM size from the instance metadata service: larger than/);
    }
    // publicKeys that are not JSON, not a list, entries without keyData, keys that are not keys.
    expect(parseImdsPublicKeys('<html>', (l) => logs.push(l))).toEqual([]);
    expect(parseImdsPublicKeys('{"keyData":"x"}', (l) => logs.push(l))).toEqual([]);
    logs.length = 0;
    expect(parseImdsPublicKeys(JSON.stringify([{ keyData: 42 }, null, { keyData: 'ssh-rsa AAAA /etc/passwd' }, { keyData: `${ED}\nssh-rsa AAAA` }, { keyData: IMDS_KEY }]), (l) => logs.push(l))).toEqual([ED, IMDS_KEY]);
    expect(logs.filter((l) => /ignoring/.test(l))).toHaveLength(4);
  });

  it('asks only the WireServer in use for the shared configuration, and only under /machine', async () => {
    const root = await makeRoot();
    for (const [url, asked] of [
      ['http://10.9.9.9/machine/elsewhere?comp=config&amp;type=sharedConfig', '/machine/elsewhere'],
      ['file:///etc/passwd', undefined],
      ['http://evil.example.com/steal?x=1', undefined],
      ['not a url', undefined],
    ] as const) {
      mock.reset(azureRoutes({ '/machine/': { body: goalState({ sharedConfig: url }) } }));
      logs.length = 0;
      const md = await azure.metadata(env(root));
      expect(md.attributes.COREOS_AZURE_IPV4_DYNAMIC).toBeUndefined();
      const other = mock.seen.filter((s) => s.path !== '/machine/' && !s.path.startsWith('/metadata/'));
      expect(other.map((s) => s.path)).toEqual(asked === undefined ? [] : [asked]);
      if (asked === undefined) expect(logs.join('\n')).toMatch(/ignoring the goal state's SharedConfig/);
    }
  });

  it('refuses a shared configuration or goal state that is not plain XML, and huge ones', async () => {
    const root = await makeRoot();
    const laughs = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><SharedConfig><Incarnation instance="&lol2;"/></SharedConfig>`;
    mock.reset(azureRoutes({ [SC_PATH]: { body: laughs } }));
    await expect(azure.metadata(env(root))).rejects.toThrow(/^azure: the shared configuration is not valid XML: <!DOCTYPE> is not accepted/);
    mock.reset(azureRoutes({ '/machine/': { body: goalState().replace('<GoalState', '<!DOCTYPE GoalState SYSTEM "http://evil/x.dtd">\n<GoalState') } }));
    await expect(azure.metadata(env(root))).rejects.toThrow(/^azure: refusing the WireServer's answer: the goal state is not valid XML: <!DOCTYPE>/);
    mock.reset(azureRoutes({ '/machine/': { body: `<GoalState>${' '.repeat(300 * 1024)}</GoalState>` } }));
    await expect(azure.metadata(env(root))).rejects.toThrow(/^azure: cannot get the goal state from the WireServer: the goal state is \d+ bytes, more than the 262144 allowed$/);
    mock.reset(azureRoutes({ [SC_PATH]: { body: 'x'.repeat(5 * 1024 * 1024) } }));
    await expect(azure.metadata(env(root))).rejects.toThrow(/^azure: cannot get the shared configuration from the WireServer: it is \d+ bytes, more than the \d+ allowed$/);
  });

  it('fails clearly when the WireServer or IMDS cannot be reached', async () => {
    const root = await makeRoot();
    mock.reset(azureRoutes());
    const dead = await deadUrl();
    await expect(azure.metadata(env(root, { metadataUrl: dead }))).rejects.toThrow(
      /^azure: cannot read the (VM size|public keys) from the instance metadata service: GET http:\/\/127\.0\.0\.1:\d+\/metadata\/instance\/compute\/\w+\?api-version=[\w&=-]+ failed after 3 attempts: .*ECONNREFUSED$/,
    );
    await expect(azure.metadata(env(root, { wireServerUrl: dead }))).rejects.toThrow(/^azure: cannot get the goal state from the WireServer: GET http:\/\/127\.0\.0\.1:\d+\/machine\/\?comp=goalstate failed after 3 attempts: .*ECONNREFUSED$/);
    mock.reset(azureRoutes({ [VMSIZE]: { status: 500 } }));
    await expect(azure.metadata(env(root))).rejects.toThrow(/^azure: cannot read the VM size from the instance metadata service: GET .* failed after 3 attempts: HTTP 500/);
  });

  it('reads the parts of the documents it needs', () => {
    expect(parseGoalState(goalState())).toEqual({ incarnation: '42', containerId: CID, instanceId: IID, sharedConfig: SC_URL.replace(/&amp;/g, '&') });
    expect(parseGoalState(goalState({ instanceId: null, sharedConfig: null }))).toEqual({ incarnation: '42', containerId: CID });
    expect(() => parseGoalState('<Health/>')).toThrow(/the root element is <Health>, not <GoalState>/);
    const log: string[] = [];
    expect(parseSharedConfig(sharedConfig(), (l) => log.push(l), 'azure')).toEqual({ dynamic: '10.0.0.4', virtual: '40.112.1.2' });
    expect(log).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// The boot check-in

/** A TCP relay on <address>:80 to the mock (a lease's option 245 gives only an address). */
async function relayOnPort80(address: string): Promise<{ server: TcpServer; close: () => Promise<void> }> {
  const port = Number(new URL(mock.base).port);
  const open = new Set<Socket>();
  const server = createTcpServer((sock) => {
    const up = connect(port, '127.0.0.1');
    for (const s of [sock, up]) {
      open.add(s);
      s.on('close', () => open.delete(s));
    }
    sock.pipe(up).pipe(sock);
    sock.on('error', () => up.destroy());
    up.on('error', () => sock.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(80, address, resolve);
  });
  // Kept-alive connections would hold close() for seconds.
  const close = async () => {
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const s of open) s.destroy();
    await closed;
  };
  return { server, close };
}

describe('azure: check-in (the Ready health report)', () => {
  it('GETs the goal state and POSTs the Ready report with its values and the protocol headers', async () => {
    mock.reset(azureRoutes());
    await azure.checkIn!(env(await makeRoot()));
    expect(mock.seen).toHaveLength(2);
    const [get, post] = mock.seen as [Seen, Seen];
    expect({ method: get.method, path: get.path, query: get.query }).toEqual({ method: 'GET', path: '/machine/', query: 'comp=goalstate' });
    expect(get.headers).toMatchObject({ 'x-ms-version': '2012-11-30', 'x-ms-agent-name': 'com.coreos.afterburn' });
    expect({ method: post.method, path: post.path, query: post.query }).toEqual({ method: 'POST', path: '/machine/', query: 'comp=health' });
    expect(post.headers).toMatchObject({ 'x-ms-version': '2012-11-30', 'x-ms-agent-name': 'com.coreos.afterburn', 'content-type': 'text/xml; charset=utf-8' });
    expect(post.body.toString('utf8')).toBe(READY());
    expect(logs.join('\n')).toMatch(/azure: reported Ready to the WireServer at http:\/\/127\.0\.0\.1:\d+ \(goal state incarnation 42\)/);
  });

  it('finds the WireServer through DHCP option 245 in a networkd lease', async () => {
    const root = await makeRoot();
    // A private loopback address for this run, so that nothing else on the machine is in the way.
    const address = `127.245.${1 + (process.pid % 250)}.${1 + Math.floor(Math.random() * 250)}`;
    const hex = address
      .split('.')
      .map((o) => Number(o).toString(16).padStart(2, '0'))
      .join('');
    await put(root, '/run/systemd/netif/leases/1', '# This is private data. Do not parse.\nADDRESS=127.0.0.1\n');
    await put(root, '/run/systemd/netif/leases/2', '# This is private data. Do not parse.\nADDRESS=10.0.0.4\nOPTION_245=zz0011\n');
    await put(root, '/run/systemd/netif/leases/10', `# This is private data. Do not parse.\nADDRESS=10.0.0.4\nSERVER_ADDRESS=168.63.129.16\nROUTER=10.0.0.1\nOPTION_245=${hex}\n`);
    const relay = await relayOnPort80(address);
    try {
      mock.reset(azureRoutes());
      const e = env(root, { wireServerUrl: undefined });
      expect(e.wireServerUrl).toBeUndefined();
      await azure.checkIn!(e);
      expect(healthPosts().map((s) => s.body.toString())).toEqual([READY()]);
      expect(mock.seen.every((s) => s.headers.host === address)).toBe(true);
      const log = logs.join('\n');
      expect(log).toMatch(new RegExp(`the WireServer is ${address.replace(/\./g, '\\.')} \\(DHCP option 245 in /run/systemd/netif/leases/10\\)`));
      expect(log).toMatch(/ignoring the DHCP option 245 in \/run\/systemd\/netif\/leases\/2/);
    } finally {
      await relay.close();
    }
  });

  it("decodes option 245 as networkd and NetworkManager write it, else uses Azure's address", async () => {
    expect(option245Address('a83f8110')).toBe('168.63.129.16');
    expect(option245Address('A8:3F:81:10')).toBe('168.63.129.16');
    for (const bad of ['', 'a83f81', 'a83f811000', 'g83f8110', 'a8:3f:8110', '168.63.129.16', '00000000', 'ffffffff']) expect(option245Address(bad), bad).toBeUndefined();
    expect(leaseOption245('ADDRESS=10.0.0.4\nOPTION_245=0a000001\r\n')).toBe('10.0.0.1');
    expect(leaseOption245('ADDRESS=10.0.0.4\n')).toBeUndefined();
    expect(leaseOption245('OPTION_245=nope\n')).toBeNull();
    // No override, no lease: the well-known address (only computed here, never contacted).
    const e = env(await makeRoot(), { wireServerUrl: undefined });
    expect(await wireServerBase(e, 'azure')).toBe('http://168.63.129.16');
    expect(logs.join('\n')).toMatch(/no DHCP option 245 in the networkd leases; using the WireServer at 168\.63\.129\.16/);
    expect(await wireServerBase(env('/nonexistent', { wireServerUrl: 'http://127.0.0.1:9/' }), 'azure')).toBe('http://127.0.0.1:9');
    expect(mock.seen).toEqual([]);
  });

  it('retries a failing WireServer: a 500 then the goal state, a 503 then the report', async () => {
    mock.reset(azureRoutes({ '/machine/': [{ status: 500 }, { body: goalState() }], 'POST /machine/': [{ status: 503 }, { status: 200 }] }));
    await azure.checkIn!(env(await makeRoot()));
    expect(mock.seen.map((s) => `${s.method} ${s.query}`)).toEqual(['GET comp=goalstate', 'GET comp=goalstate', 'POST comp=health', 'POST comp=health']);
    expect(healthPosts().map((s) => s.body.toString())).toEqual([READY(), READY()]);
    const log = logs.join('\n');
    expect(log).toMatch(/GET http:\/\/127\.0\.0\.1:\d+\/machine\/\?comp=goalstate failed \(attempt 1\/3\): HTTP 500/);
    expect(log).toMatch(/POST http:\/\/127\.0\.0\.1:\d+\/machine\/\?comp=health failed \(attempt 1\/3\): HTTP 503/);
  });

  it('reports again for the new goal state when the WireServer answers 410 Gone', async () => {
    mock.reset(azureRoutes({ '/machine/': [{ body: goalState() }, { body: goalState({ incarnation: '43' }) }], 'POST /machine/': [{ status: 410 }, { status: 200 }] }));
    await azure.checkIn!(env(await makeRoot()));
    expect(healthPosts().map((s) => s.body.toString())).toEqual([READY('42'), READY('43')]);
    expect(logs.join('\n')).toMatch(/refused the health report for incarnation 42 \(HTTP 410: the goal state changed\); reading it again/);
  });

  it('fails with one clear line when the WireServer is dead or keeps failing', async () => {
    const root = await makeRoot();
    const dead = await deadUrl();
    const err = await azure.checkIn!(env(root, { wireServerUrl: dead })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OemError);
    expect((err as Error).message).toMatch(/^azure: cannot get the goal state from the WireServer: GET http:\/\/127\.0\.0\.1:\d+\/machine\/\?comp=goalstate failed after 3 attempts: .*ECONNREFUSED$/);
    expect((err as OemError).hint).toBe('check --wireserver-url');
    expect(logs.filter((l) => /failed \(attempt \d\/3\)/.test(l))).toHaveLength(2);
    mock.reset(azureRoutes({ 'POST /machine/': { status: 500 } }));
    await expect(azure.checkIn!(env(root))).rejects.toThrow(/^azure: cannot report Ready to the WireServer: POST http:\/\/127\.0\.0\.1:\d+\/machine\/\?comp=health failed after 3 attempts: HTTP 500[^\n]*$/);
    expect(healthPosts()).toHaveLength(3);
    // A refusal is not retried.
    mock.reset(azureRoutes({ 'POST /machine/': { status: 403 } }));
    await expect(azure.checkIn!(env(root))).rejects.toThrow(/^azure: cannot report Ready to the WireServer: POST .* failed: HTTP 403/);
    expect(healthPosts()).toHaveLength(1);
    // 410 every time: three rounds, then the error.
    mock.reset(azureRoutes({ 'POST /machine/': { status: 410 } }));
    await expect(azure.checkIn!(env(root))).rejects.toThrow(/HTTP 410/);
    expect(healthPosts()).toHaveLength(3);
  });

  it('escapes goal state values, refuses unexpected ones and hostile documents, and never posts them raw', async () => {
    const root = await makeRoot();
    // Values with markup (as entities, and in CDATA): escaped in the report, which parses back to them.
    mock.reset(azureRoutes({ '/machine/': { body: goalState({ containerId: 'a&lt;b&amp;c&gt;&quot;d&apos;', instanceId: '<![CDATA[x</InstanceId><Evil/>]]>' }) } }));
    await azure.checkIn!(env(root));
    const body = healthPosts()[0]!.body.toString();
    expect(body).toBe(READY('42', 'a&lt;b&amp;c&gt;&quot;d&apos;', 'x&lt;/InstanceId&gt;&lt;Evil/&gt;'));
    expect(body).not.toContain('<Evil');
    const report = parseXml(body);
    const container = report.children.find((c) => c.local === 'Container')!;
    expect(container.children.find((c) => c.local === 'ContainerId')?.text).toBe('a<b&c>"d\'');

    const refused: [string, RegExp][] = [
      [goalState({ instanceId: `x&#10;COREOS_X=1` }), /^azure: the goal state has the InstanceId "x\\nCOREOS_X=1", which is not printable ASCII without spaces; not reporting it to the WireServer$/],
      [goalState({ containerId: 'a b' }), /has the ContainerId "a b", which is not printable ASCII/],
      [goalState({ containerId: 'caf\u00e9' }), /has the ContainerId "café", which is not printable ASCII/],
      [goalState({ incarnation: '42&lt;x&gt;' }), /has the Incarnation "42<x>", which is not a decimal number/],
      [goalState({ incarnation: '12345678901' }), /Incarnation "12345678901", which is not a decimal number/],
      [goalState({ instanceId: 'i'.repeat(257) }), /has the InstanceId "i{79}…", longer than 256 characters/],
      [goalState({ instanceId: null }), /the goal state has no InstanceId/],
      [goalState({ containerId: '' }), /the goal state has no ContainerId/],
      [goalState().replace('<GoalState', '<!DOCTYPE g [<!ENTITY x SYSTEM "file:///etc/shadow">]>\n<GoalState').replace(CID, '&x;'), /^azure: refusing the WireServer's answer: the goal state is not valid XML: <!DOCTYPE> is not accepted/],
      [goalState({ containerId: '&x;' }), /unknown entity &x;/],
      [goalState({ containerId: 'a<b' }), /not valid XML/],
      [`<GoalState>${'<a>'.repeat(70)}</GoalState>`, /nested more than 64 deep/],
      [`${goalState()}${' '.repeat(300 * 1024)}`, /^azure: cannot get the goal state from the WireServer: the goal state is \d+ bytes, more than the 262144 allowed$/],
      ['{"not": "xml"}', /text outside the root element/],
    ];
    for (const [doc, why] of refused) {
      mock.reset(azureRoutes({ '/machine/': { body: doc } }));
      const err = await azure.checkIn!(env(root)).catch((e: unknown) => e);
      expect(err, doc.slice(0, 200)).toBeInstanceOf(OemError);
      expect((err as Error).message, doc.slice(0, 200)).toMatch(why);
      expect((err as Error).message).not.toContain('\n');
      expect(healthPosts(), doc.slice(0, 200)).toEqual([]);
    }
    expect(escapeXml(`<a href="x">&'`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&apos;');
    expect(() => healthReport({ incarnation: '1', containerId: 'c' })).toThrow(/has no InstanceId/);
  });
});

// ---------------------------------------------------------------------------------------------
// Azure Stack

describe('azurestack', () => {
  it('reads hostname, keys and userdata from ovf-env.xml and asks no service for them', async () => {
    const e = env(await makeRoot());
    await put(e.root, '/media/azure/ovf-env.xml', ovfEnv({ hostname: 'stack-vm1', customData: b64(CLOUD_CONFIG), keys: keysXml(ED) }));
    mock.reset(azureRoutes());
    expect(await azurestack.metadata(e)).toEqual({ attributes: { COREOS_HOSTNAME: 'stack-vm1' }, hostname: 'stack-vm1', sshKeys: [ED], networkUnits: [] });
    expect((await azurestack.userdata(e))?.toString()).toBe(CLOUD_CONFIG);
    expect(mock.seen).toEqual([]);
  });

  it("takes the hostname from the identity endpoint's vmName when ovf-env.xml has none", async () => {
    const root = await makeRoot();
    mock.reset({ [IDENTITY]: { body: JSON.stringify({ vmName: 'Stack-VM2', subscriptionId: '0f1e2d3c-0000-4000-8000-000000000000' }) } });
    const md = await azurestack.metadata(env(root));
    expect(md).toEqual({ attributes: { COREOS_HOSTNAME: 'stack-vm2' }, hostname: 'stack-vm2', sshKeys: [], networkUnits: [] });
    expect(mock.seen.map((s) => ({ path: s.path, query: s.query, metadata: s.headers.metadata }))).toEqual([{ path: IDENTITY, query: 'api-version=2019-03-11', metadata: 'true' }]);
    // None, hostile ones, garbage: no hostname, a log line.
    for (const reply of [{ status: 404 }, { body: JSON.stringify({ vmName: 'evil\nname' }) }, { body: JSON.stringify({ vmName: 7 }) }, { body: '<html>' }, { body: '[]' }]) {
      mock.reset({ [IDENTITY]: reply });
      logs.length = 0;
      const m = await azurestack.metadata(env(root));
      expect(m.hostname, JSON.stringify(reply)).toBeUndefined();
      expect(m.attributes).toEqual({});
      expect(logs.join('\n')).toMatch(/identity|vmName/);
    }
    expect(identityVmName('{"vmName":"a"}', () => {})).toBe('a');
    mock.reset({});
    await expect(azurestack.metadata(env(root, { metadataUrl: await deadUrl() }))).rejects.toThrow(/^azurestack: cannot read the VM name from the identity endpoint: GET .* failed after 3 attempts/);
  });

  it('checks in like Azure', async () => {
    mock.reset(azureRoutes());
    await azurestack.checkIn!(env(await makeRoot()));
    expect(mock.seen.map((s) => `${s.method} ${s.path}?${s.query}`)).toEqual(['GET /machine/?comp=goalstate', 'POST /machine/?comp=health']);
    expect(healthPosts()[0]!.body.toString()).toBe(READY());
    await expect(azurestack.checkIn!(env(await makeRoot(), { wireServerUrl: await deadUrl() }))).rejects.toThrow(/^azurestack: cannot get the goal state from the WireServer: .*failed after 3 attempts/);
  });
});

// ---------------------------------------------------------------------------------------------
// oem-agent, end to end

describe('oem-agent on Azure and Azure Stack', () => {
  it('check-in --provider azure --wireserver-url: reports Ready', async () => {
    const root = await makeRoot();
    mock.reset(azureRoutes());
    const r = await agent(agentArgs('check-in', root, 'azure', mock.base, '--wireserver-url', mock.base));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/oem-agent: azure: reported Ready to the WireServer at http:\/\/127\.0\.0\.1:\d+ \(goal state incarnation 42\)\noem-agent: azure: checked in\n/);
    expect(mock.seen.map((s) => `${s.method} ${s.path}?${s.query}`)).toEqual(['GET /machine/?comp=goalstate', 'POST /machine/?comp=health']);
    expect(healthPosts()[0]!.body.toString()).toBe(READY());

    const s = await agent(agentArgs('check-in', root, 'azurestack', mock.base, '--wireserver-url', mock.base));
    expect(s.code).toBe(0);
    expect(s.out).toMatch(/azurestack: checked in/);

    // A dead WireServer: exit 1, one error line and a hint.
    const dead = await agent(agentArgs('check-in', root, 'azure', mock.base, '--wireserver-url', await deadUrl()));
    expect(dead.code).toBe(1);
    expect(dead.err).toMatch(/^oem-agent: error: azure: cannot get the goal state from the WireServer: GET http:\/\/127\.0\.0\.1:\d+\/machine\/\?comp=goalstate failed after 3 attempts: [^\n]*\noem-agent: hint: check --wireserver-url\n$/);
  });

  it("metadata: COREOS_AZURE_* and, with --format afterburn, Afterburn's AFTERBURN_AZURE_* names", async () => {
    const root = await makeRoot();
    await put(root, '/media/azure/ovf-env.xml', ovfEnv({ hostname: 'flatcar-vm1' }));
    mock.reset(azureRoutes());
    const c = await agent(agentArgs('metadata', root, 'azure', mock.base, '--wireserver-url', mock.base));
    expect(c.err).toBe('');
    expect(await readFile(join(root, 'run/coreos/metadata'), 'utf8')).toBe(
      'COREOS_AZURE_IPV4_DYNAMIC=10.0.0.4\nCOREOS_AZURE_IPV4_VIRTUAL=40.112.1.2\nCOREOS_AZURE_VMSIZE=Standard_D2s_v3\nCOREOS_HOSTNAME=flatcar-vm1\nCOREOS_IPV4_PRIVATE=10.0.0.4\nCOREOS_IPV4_PUBLIC=40.112.1.2\n',
    );
    const a = await agent(agentArgs('metadata', root, 'azure', mock.base, '--wireserver-url', mock.base, '--format', 'afterburn'));
    expect(a.err).toBe('');
    expect(a.code).toBe(0);
    expect(await readFile(join(root, 'run/metadata/afterburn'), 'utf8')).toBe('AFTERBURN_AZURE_IPV4_DYNAMIC=10.0.0.4\nAFTERBURN_AZURE_IPV4_VIRTUAL=40.112.1.2\nAFTERBURN_AZURE_VMSIZE=Standard_D2s_v3\n');
    // Azure Stack: Afterburn has no attributes there, nor does the agent.
    const s = await agent(agentArgs('metadata', root, 'azurestack', mock.base, '--wireserver-url', mock.base, '--format', 'afterburn', '--attributes', '/run/metadata/afterburn-stack'));
    expect(s.code).toBe(0);
    expect(await readFile(join(root, 'run/metadata/afterburn-stack'), 'utf8')).toBe('');
  });
});
