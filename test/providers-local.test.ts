/**
 * The local and LAN metadata providers (Azure's are in providers-azure.test.ts): cloudsigma (server context over a
 * serial line, here a pty served by a small Python script), cloudstack and exoscale (the virtual
 * router's HTTP service, here node:http on 127.0.0.1), hyperv, niftycloud (vmtoolsd, here a stub
 * script), vagrant, vmware and pxe. Inputs follow the platforms' documented formats; then absent
 * values, retries, garbage and hostile values.
 *
 * Nothing here talks to anything but 127.0.0.1.
 */
import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { provider as cloudsigma } from '../oem/providers/cloudsigma.js';
import { dhcpServerFromLeases, leaseServerAddress, metadataBase, serverAuthority } from '../oem/providers/cloudstack-common.js';
import { provider as cloudstack } from '../oem/providers/cloudstack.js';
import { provider as exoscale } from '../oem/providers/exoscale.js';
import { provider as hyperv } from '../oem/providers/hyperv.js';
import { provider as niftycloud } from '../oem/providers/niftycloud.js';
import { parseCmdline, provider as pxe } from '../oem/providers/pxe.js';
import type { ProviderEnv } from '../oem/providers/types.js';
import { provider as vagrant } from '../oem/providers/vagrant.js';
import { provider as vmware } from '../oem/providers/vmware.js';

// Real public keys (OpenSSH ssh-keygen), as in ssh-keys.test.ts.
const ED = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIENQF7ZfEWz/nirY09uAuYtaLzkukGx70zg/7N+Yf5/f alice@laptop';
const RSA =
  'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC9lPnVqryTRWw4mvshR/8IZ12K2pCycUlnOjWMs1PLyZQPqI1+ew0wui7j4uK0nfpnCK/if86QNwQC9SqonI5+cZouk1N5EBUH1k3HcVRokBwtcwmLBhtxsYXU3V5I3izjJZd3c750Za7CvpBYNL+UUlfjDiyJuPwm3PqKuxwuApW3e24DggnMBUhxWRwF8zDducWRl+FeShMyUvTbQk2lOcx396fc9fAv78O36xOaFcoAGitwJaVrWk4jJzIs3B0fkWqmm1TpUV0gIdl1wQdmQ1N6YCJhT8FVqdE2WOO3r42XeRW5A3sv6gX1JAnsWEQpmf5dmHbbmrE/q7VUA4zH bob@desk';
const CLOUD_CONFIG = '#cloud-config\nhostname: from-userdata\nssh_authorized_keys:\n  - ssh-ed25519 AAAA...\n';

type TestEnv = ProviderEnv & { lines: string[] };

const dirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), `oem-prov-${prefix}-`));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function makeEnv(over: Partial<ProviderEnv> = {}): Promise<TestEnv> {
  const lines: string[] = [];
  const root = over.root ?? (await tempDir('root'));
  return {
    root,
    // Never used by these providers; a closed port on 127.0.0.1 in case one did.
    metadataUrl: 'http://127.0.0.1:9',
    configDrive: '/media/configdrive',
    serialDevice: '/nonexistent/ttyS1',
    vmtoolsd: ['/nonexistent/vmtoolsd'],
    azureDvd: '/media/azure',
    cmdline: '',
    http: { tries: 3, backoffMs: 5, maxBackoffMs: 20, timeoutMs: 2000 },
    ...over,
    log: (line: string) => void lines.push(line),
    lines,
  };
}

async function put(root: string, path: string, content: string | Buffer): Promise<string> {
  const host = join(root, path);
  await mkdir(dirname(host), { recursive: true });
  await writeFile(host, content);
  return host;
}

async function link(root: string, path: string, target: string): Promise<void> {
  const host = join(root, path);
  await mkdir(dirname(host), { recursive: true });
  await symlink(target, host);
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

// ---------------------------------------------------------------------------------------------
// A metadata service on 127.0.0.1

type Answer = { status?: number; body?: string | Buffer };

interface Service {
  base: string;
  authority: string;
  hits: Map<string, number>;
  close: () => Promise<void>;
}

/** Serves `routes`: a path answers its entries in turn (the last one repeats); others 404. */
async function serve(routes: Record<string, Answer | Answer[]>): Promise<Service> {
  const hits = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    const n = hits.get(path) ?? 0;
    hits.set(path, n + 1);
    const route = routes[path];
    const list = route === undefined ? [{ status: 404, body: 'not found' }] : Array.isArray(route) ? route : [route];
    const a = list[Math.min(n, list.length - 1)] ?? { status: 404 };
    res.statusCode = a.status ?? 200;
    res.end(a.body ?? '');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    authority: `127.0.0.1:${port}`,
    hits,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const services: Service[] = [];
afterEach(async () => {
  while (services.length) await services.pop()!.close();
});
async function service(routes: Record<string, Answer | Answer[]>): Promise<Service> {
  const s = await serve(routes);
  services.push(s);
  return s;
}

// ---------------------------------------------------------------------------------------------
// CloudSigma: a pty whose other side answers like the hypervisor

const HAS_PYTHON = spawnSync('python3', ['-c', 'import pty, select']).status === 0;

/**
 * The hypervisor side: opens a pty, prints the slave's name, and answers every `<...>` request on
 * the master with the payload, a newline and EOT. The slave is left in its default (cooked, echo)
 * mode: the provider must make it raw itself. Modes: ok, silent (never answers), silent-once (the
 * first request goes unanswered), stale (junk and an EOT first). Requests are appended to a log.
 */
const FAKE_CONTEXT_SERVER = `
import os, pty, select, sys
mode, payload_path, log_path = sys.argv[1], sys.argv[2], sys.argv[3]
master, slave = pty.openpty()
print(os.ttyname(slave), flush=True)
payload = open(payload_path, 'rb').read()
buf = b''
count = 0
while True:
    r, _, _ = select.select([master, sys.stdin], [], [], 60)
    if not r:
        break
    if sys.stdin in r and not os.read(sys.stdin.fileno(), 1):
        break
    if master not in r:
        continue
    try:
        buf += os.read(master, 65536)
    except OSError:
        continue
    while b'<' in buf and b'>' in buf[buf.index(b'<'):]:
        start = buf.index(b'<')
        end = buf.index(b'>', start)
        request, buf = buf[start + 1:end], buf[end + 1:]
        count += 1
        with open(log_path, 'ab') as f:
            f.write(repr(request).encode() + b'\\n')
        if mode == 'silent' or (mode == 'silent-once' and count == 1):
            continue
        if mode == 'stale':
            os.write(master, b'{"half": \\n\\x04')
        os.write(master, payload + b'\\n\\x04')
`;

interface FakeTty {
  device: string;
  requests: () => Promise<string[]>;
  stop: () => void;
}

const ttys: ChildProcessWithoutNullStreams[] = [];
afterAll(() => {
  for (const p of ttys) p.kill('SIGKILL');
});

async function fakeTty(payload: string, mode = 'ok'): Promise<FakeTty> {
  const dir = await tempDir('tty');
  const script = join(dir, 'server.py');
  await writeFile(script, FAKE_CONTEXT_SERVER);
  await writeFile(join(dir, 'payload'), payload);
  const log = join(dir, 'requests');
  await writeFile(log, '');
  const child = spawn('python3', [script, mode, join(dir, 'payload'), log], { stdio: 'pipe' });
  ttys.push(child);
  const device = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
    child.on('exit', (code) => reject(new Error(`fake tty exited (${code})`)));
  });
  return {
    device,
    requests: async () => (await readFile(log, 'utf8')).split('\n').filter(Boolean),
    stop: () => {
      child.stdin.end();
      child.kill();
    },
  };
}

/** The documented example answer to `<\n\n>` (CloudSigma API docs, server context). */
const DOCUMENTED_CONTEXT =
  '{"uuid": "e83c79b3-ef07-4b8e-968e-dff5c386a053", "requirements": [], "name": "test_server", "cpus_instead_of_cores": false, "tags": [], "mem": 1073741824, "nics": [{"boot_order": null, "vlan": null, "ip_v4_conf": {"ip": {"uuid": "162.213.38.123", "tags": [], "nameservers": ["69.194.139.62", "178.22.66.167", "178.22.71.56"], "netmask": 24, "meta": {}, "gateway": "162.213.38.1"}, "conf": "dhcp"}, "mac": "22:51:c1:18:7b:4a", "model": "virtio", "ip_v6_conf": null}], "enable_numa": false, "global_context": {}, "drives": [{"device": "virtio", "dev_channel": "0:0", "drive": {"uuid": "13168369-8450-4070-8909-444f56b747e8", "tags": [], "media": "disk", "name": "test_clone_1", "meta": {"description": "", "install_notes": ""}, "allow_multimount": false, "licenses": [], "affinities": [], "size": 12348030976}, "boot_order": 1}], "cpu_model": null, "hv_relaxed": false, "hv_tsc": false, "meta": {"ssh_public_key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCy4XpmD3kEfRZ+LCwFh3Xmqrkm7rSiDu8v+ZCTOA3vlNjmy/ZOc3vy9Zr+IhWPP4yipiApkGRsBM63tTgnxqUUn/WU7qkbBNktZBcs5p7Mj/zO4ZHkk4VoTczFzHlPGwuak2P4wTftEj7sU8IRutaAbMoKj4AMuFF50j4sIgF7P5b5FtTIM2b5HSW8BlDz10b67+xsj6s3Jv05xxbBs+RWj+v7D5yjMVeeErXoSui8dlHpUu6QOVKn8LLmdpxvehc6ns8yW7cbQvWmLjOICMnm6BXdVtOKWBncDq9FGLmKF3fUeZZPbv79Z7dyZs+xGZGMHbpaNHpuY9QhNS/hQ5D5 dave@hal"}, "smp": 1, "cpu": 1000, "vnc_password": "3022962f5d944b97"}';

/** A context with runtime NIC information and base64 userdata (as coreos-cloudinit's tests have it). */
function runtimeContext(over: Record<string, unknown> = {}, meta: Record<string, string> = {}): string {
  return JSON.stringify({
    context: true,
    cpu: 4000,
    mem: 4294967296,
    meta: { base64_fields: 'cloudinit-user-data', 'cloudinit-user-data': b64(CLOUD_CONFIG), ssh_public_key: ED, ...meta },
    name: 'coreos',
    nics: [
      { runtime: { interface_type: 'public', ip_v4: { uuid: '31.171.251.74' }, ip_v6: null }, vlan: null },
      { runtime: { interface_type: 'private', ip_v4: { uuid: '10.0.0.5' } }, vlan: { uuid: '6a1e4a42-c6f3-4d25-8f2e-1d4a5e3c4b2a' } },
    ],
    smp: 2,
    status: 'running',
    uuid: '20a0059b-041e-4d0c-bcc6-9b2852de48b3',
    ...over,
  });
}

describe.skipIf(!HAS_PYTHON)('cloudsigma', () => {
  let tty: FakeTty | undefined;
  afterEach(() => tty?.stop());

  it('reads the documented context: static address, meta.ssh_public_key, uuid for a name that is no hostname', async () => {
    tty = await fakeTty(DOCUMENTED_CONTEXT);
    const env = await makeEnv({ serialDevice: tty.device });
    const md = await cloudsigma.metadata(env);
    expect(md.attributes).toEqual({ COREOS_IPV4_PUBLIC: '162.213.38.123', COREOS_HOSTNAME: 'e83c79b3-ef07-4b8e-968e-dff5c386a053' });
    expect(md.hostname).toBe('e83c79b3-ef07-4b8e-968e-dff5c386a053');
    expect(md.sshKeys).toHaveLength(1);
    expect(md.sshKeys[0]).toMatch(/^ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCy4Xpm.* dave@hal$/);
    expect(env.lines.join('\n')).toMatch(/server name "test_server"/);
    expect(await cloudsigma.userdata(env)).toBeNull();
    // One exchange for both, and the request is `<`, two newlines, `>`.
    const reqs = await tty.requests();
    expect(reqs).toHaveLength(1);
    expect(reqs[0]?.replace(/\\r/g, '')).toBe("b'\\n\\n'");
  });

  it('reads runtime addresses, base64 userdata and keys; metadata and userdata share one exchange', async () => {
    tty = await fakeTty(runtimeContext());
    const env = await makeEnv({ serialDevice: tty.device });
    const [md, ud] = await Promise.all([cloudsigma.metadata(env), cloudsigma.userdata(env)]);
    expect(md).toEqual({
      attributes: { COREOS_IPV4_PUBLIC: '31.171.251.74', COREOS_IPV4_PRIVATE: '10.0.0.5', COREOS_HOSTNAME: 'coreos' },
      hostname: 'coreos',
      sshKeys: [ED],
      networkUnits: [],
    });
    expect(ud?.toString()).toBe(CLOUD_CONFIG);
    expect(await tty.requests()).toHaveLength(1);
  });

  it('takes userdata as text when base64_fields does not name it', async () => {
    tty = await fakeTty(runtimeContext({}, { base64_fields: 'other', 'cloudinit-user-data': '#cloud-config\nhostname: x\n' }));
    const env = await makeEnv({ serialDevice: tty.device });
    expect((await cloudsigma.userdata(env))?.toString()).toBe('#cloud-config\nhostname: x\n');
  });

  it('skips stale output and asks again when an answer does not come', async () => {
    tty = await fakeTty(runtimeContext(), 'stale');
    const env = await makeEnv({ serialDevice: tty.device });
    expect((await cloudsigma.metadata(env)).hostname).toBe('coreos');
    expect(env.lines.join('\n')).toMatch(/not JSON/);
    tty.stop();

    tty = await fakeTty(runtimeContext(), 'silent-once');
    const env2 = await makeEnv({ serialDevice: tty.device, http: { tries: 3, backoffMs: 5, maxBackoffMs: 10, timeoutMs: 400 } });
    expect((await cloudsigma.metadata(env2)).hostname).toBe('coreos');
    expect(await tty.requests()).toHaveLength(2);
  });

  it('fails on garbage, silence, a missing device and a device that is not a terminal', async () => {
    tty = await fakeTty('this is not json');
    const http = { tries: 2, backoffMs: 5, maxBackoffMs: 10, timeoutMs: 300 };
    await expect(cloudsigma.metadata(await makeEnv({ serialDevice: tty.device, http }))).rejects.toThrow(/no server context/);
    tty.stop();
    tty = await fakeTty('[1, 2, 3]');
    await expect(cloudsigma.userdata(await makeEnv({ serialDevice: tty.device, http }))).rejects.toThrow(/no server context/);
    tty.stop();
    tty = await fakeTty(runtimeContext(), 'silent');
    await expect(cloudsigma.metadata(await makeEnv({ serialDevice: tty.device, http }))).rejects.toThrow(/no server context/);
    await expect(cloudsigma.metadata(await makeEnv({ serialDevice: '/nonexistent/ttyS1' }))).rejects.toThrow(/cannot open/);
    const file = join(await tempDir('notty'), 'ttyS1');
    await writeFile(file, '');
    await expect(cloudsigma.metadata(await makeEnv({ serialDevice: file }))).rejects.toThrow(/not a terminal/);
  });

  it('drops hostile values: a newline in the name, a bad address, a bad key, bad base64', async () => {
    tty = await fakeTty(
      runtimeContext(
        { name: 'evil\nname', nics: [{ runtime: { interface_type: 'public', ip_v4: { uuid: '1.2.3.4\nCOREOS_X=1' } } }] },
        { ssh_public_key: 'ssh-rsa ../../root/.ssh/authorized_keys', 'cloudinit-user-data': '%%%' },
      ),
    );
    const env = await makeEnv({ serialDevice: tty.device });
    const md = await cloudsigma.metadata(env);
    expect(md.hostname).toBe('20a0059b-041e-4d0c-bcc6-9b2852de48b3');
    expect(md.attributes.COREOS_IPV4_PUBLIC).toBeUndefined();
    expect(md.sshKeys).toEqual([]);
    const log = env.lines.join('\n');
    expect(log).toMatch(/"evil\\nname"/);
    expect(log).toMatch(/invalid SSH key/);
    await expect(cloudsigma.userdata(env)).rejects.toThrow(/not valid base64/);
  });
});

// ---------------------------------------------------------------------------------------------
// CloudStack and Exoscale

/** A networkd lease file (systemd-networkd writes these to /run/systemd/netif/leases/<ifindex>). */
function lease(server?: string): string {
  return [
    '# This is private data. Do not parse.',
    'ADDRESS=10.1.1.23',
    'NETMASK=255.255.255.0',
    'ROUTER=10.1.1.1',
    ...(server === undefined ? [] : [`SERVER_ADDRESS=${server}`]),
    'T1=1800',
    'T2=3150',
    'LIFETIME=3600',
    'DNS=10.1.1.1',
    'DOMAINNAME=cs2cloud.internal',
    'HOSTNAME=vm-7f3b',
    'CLIENTID=ff4b2a5cb800020000ab11e8a3c7b1b6c0a5f1',
    '',
  ].join('\n');
}

/** The values of the router's meta-data/ (CloudStack's names). */
const ROUTER_VALUES: Record<string, string> = {
  'local-ipv4': '10.1.1.23',
  'public-ipv4': '185.19.28.10',
  'local-hostname': 'VM-7f3b',
  'public-hostname': '185-19-28-10.example.net',
  'instance-id': 'i-2-47-VM',
  'availability-zone': 'ch-gva-2',
  'service-offering': 'Small Instance',
  'cloud-identifier': 'CloudStack-{0b7a3e1f-9c2d-4e5f-8a6b-7c8d9e0f1a2b}',
  'vm-id': '0b7a3e1f-9c2d-4e5f-8a6b-7c8d9e0f1a2b',
};

function routerRoutes(over: Record<string, Answer | Answer[]> = {}, version = 'latest'): Record<string, Answer | Answer[]> {
  const routes: Record<string, Answer | Answer[]> = {};
  for (const [k, v] of Object.entries(ROUTER_VALUES)) routes[`/${version}/meta-data/${k}`] = { body: v };
  routes[`/${version}/meta-data/public-keys`] = { body: `${ED}\n${RSA}\n` };
  routes[`/${version}/user-data`] = { body: CLOUD_CONFIG };
  return { ...routes, ...over };
}

/** Afterburn's attribute names (as COREOS_<name>_*) for the values of ROUTER_VALUES. */
function afterburnAttributes(id: string, values: Record<string, string> = ROUTER_VALUES): Record<string, string> {
  const exo = id === 'exoscale';
  const names: Record<string, string> = {
    'instance-id': 'INSTANCE_ID',
    'local-hostname': 'LOCAL_HOSTNAME',
    'public-hostname': 'PUBLIC_HOSTNAME',
    'availability-zone': 'AVAILABILITY_ZONE',
    'public-ipv4': exo ? 'PUBLIC_IPV4' : 'IPV4_PUBLIC',
    'local-ipv4': exo ? 'LOCAL_IPV4' : 'IPV4_LOCAL',
    'service-offering': 'SERVICE_OFFERING',
    'cloud-identifier': 'CLOUD_IDENTIFIER',
    'vm-id': 'VM_ID',
  };
  const prefix = exo ? 'COREOS_EXOSCALE_' : 'COREOS_CLOUDSTACK_';
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(values)) if (names[k] !== undefined) out[prefix + names[k]] = v;
  if (!exo && values['local-hostname'] !== undefined) out.COREOS_CLOUDSTACK_HOSTNAME = values['local-hostname'];
  return out;
}

describe.each([
  ['cloudstack', cloudstack],
  ['exoscale', exoscale],
])('%s', (id, provider) => {
  it('reads addresses, hostname, keys and userdata from the virtual router', async () => {
    const svc = await service(routerRoutes());
    const env = await makeEnv({ dhcpServer: svc.authority });
    expect(provider.id).toBe(id);
    expect(await provider.metadata(env)).toEqual({
      attributes: { COREOS_IPV4_PRIVATE: '10.1.1.23', COREOS_IPV4_PUBLIC: '185.19.28.10', COREOS_HOSTNAME: 'vm-7f3b', ...afterburnAttributes(id) },
      hostname: 'vm-7f3b',
      sshKeys: [ED, RSA],
      networkUnits: [],
    });
    expect((await provider.userdata(env))?.toString()).toBe(CLOUD_CONFIG);
  });

  it('is empty when the router has nothing (404, empty bodies)', async () => {
    const svc = await service({ '/latest/meta-data/local-ipv4': { body: '' }, '/latest/user-data': { body: '' } });
    const env = await makeEnv({ dhcpServer: svc.authority });
    expect(await provider.metadata(env)).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await provider.userdata(env)).toBeNull();
    const svc404 = await service({});
    expect(await provider.userdata(await makeEnv({ dhcpServer: svc404.authority }))).toBeNull();
  });

  it('tries again after a 500, and fails when the router keeps failing', async () => {
    const svc = await service(
      routerRoutes({
        '/latest/user-data': [{ status: 500 }, { body: CLOUD_CONFIG }],
        '/latest/meta-data/local-ipv4': [{ status: 503 }, { body: '10.1.1.23' }],
      }),
    );
    const env = await makeEnv({ dhcpServer: svc.authority });
    expect((await provider.userdata(env))?.toString()).toBe(CLOUD_CONFIG);
    expect((await provider.metadata(env)).attributes.COREOS_IPV4_PRIVATE).toBe('10.1.1.23');
    expect(svc.hits.get('/latest/user-data')).toBe(2);
    expect(svc.hits.get('/latest/meta-data/local-ipv4')).toBe(2);

    const down = await service({ '/latest/user-data': { status: 500 } });
    const env2 = await makeEnv({ dhcpServer: down.authority });
    await expect(provider.userdata(env2)).rejects.toThrow(/failed after 3 attempts/);
    expect(down.hits.get('/latest/user-data')).toBe(3);
  });

  it('drops hostile values with log lines', async () => {
    const svc = await service(
      routerRoutes({
        '/latest/meta-data/local-hostname': { body: 'evil\nhost' },
        '/latest/meta-data/public-ipv4': { body: '185.19.28.10; rm -rf /' },
        '/latest/meta-data/public-keys': { body: `ssh-rsa ../../etc/passwd\n${ED}\n` },
        '/latest/meta-data/public-hostname': { body: '../../etc/passwd' },
        '/latest/meta-data/service-offering': { body: 'Small\nCOREOS_IPV4_PUBLIC=6.6.6.6' },
        '/latest/meta-data/vm-id': { body: 'x'.repeat(256) },
      }),
    );
    const env = await makeEnv({ dhcpServer: svc.authority });
    const md = await provider.metadata(env);
    expect(md.hostname).toBeUndefined();
    const { 'local-hostname': _h, 'public-ipv4': _p, 'public-hostname': _ph, 'service-offering': _s, 'vm-id': _v, ...kept } = ROUTER_VALUES;
    expect(md.attributes).toEqual({ COREOS_IPV4_PRIVATE: '10.1.1.23', ...afterburnAttributes(id, kept) });
    expect(md.sshKeys).toEqual([ED]);
    const log = env.lines.join('\n');
    expect(log).toMatch(/local-hostname "evil\\nhost"/);
    expect(log).toMatch(/public-ipv4/);
    expect(log).toMatch(/public-hostname "..\/..\/etc\/passwd": it contains a slash/);
    expect(log).toMatch(/service-offering "Small\\nCOREOS_IPV4_PUBLIC=6.6.6.6": not a one-line value/);
    expect(log).toMatch(/invalid SSH key/);
  });
});

describe('exoscale: the metadata service (169.254.169.254, here 127.0.0.1), API 1.0', () => {
  it("reads Afterburn's attributes, the keys and userdata from 1.0/, without a DHCP lease", async () => {
    const svc = await service(routerRoutes({}, '1.0'));
    const env = await makeEnv({ metadataUrl: svc.base });
    expect(await exoscale.metadata(env)).toEqual({
      attributes: { COREOS_IPV4_PRIVATE: '10.1.1.23', COREOS_IPV4_PUBLIC: '185.19.28.10', COREOS_HOSTNAME: 'vm-7f3b', ...afterburnAttributes('exoscale') },
      hostname: 'vm-7f3b',
      sshKeys: [ED, RSA],
      networkUnits: [],
    });
    expect((await exoscale.userdata(env))?.toString()).toBe(CLOUD_CONFIG);
    expect([...svc.hits.keys()].every((p) => p.startsWith('/1.0/'))).toBe(true);
  });

  it('leaves out what the service does not have, and drops hostile values', async () => {
    const svc = await service({ '/1.0/meta-data/instance-id': { body: 'i-1' } });
    const env = await makeEnv({ metadataUrl: svc.base });
    expect(await exoscale.metadata(env)).toEqual({ attributes: { COREOS_EXOSCALE_INSTANCE_ID: 'i-1' }, sshKeys: [], networkUnits: [] });
    expect(await exoscale.userdata(env)).toBeNull();
    const bad = await service(
      routerRoutes({ '/1.0/meta-data/local-ipv4': { body: '10.1.1.23\nX=1' }, '/1.0/meta-data/availability-zone': { body: 'ch-gva-2\u0007' } }, '1.0'),
    );
    const env2 = await makeEnv({ metadataUrl: bad.base });
    const md = await exoscale.metadata(env2);
    expect(md.attributes.COREOS_EXOSCALE_LOCAL_IPV4).toBeUndefined();
    expect(md.attributes.COREOS_IPV4_PRIVATE).toBeUndefined();
    expect(md.attributes.COREOS_EXOSCALE_AVAILABILITY_ZONE).toBeUndefined();
    expect(md.attributes.COREOS_EXOSCALE_INSTANCE_ID).toBe('i-2-47-VM');
  });
});

describe('cloudstack: the config drive', () => {
  /** A CloudStack config drive under the root, the way CloudStack writes it. */
  async function cloudstackDrive(root: string, files: Record<string, string> = {}): Promise<void> {
    const values: Record<string, string> = {
      'cloudstack/metadata/availability_zone.txt': 'zone1',
      'cloudstack/metadata/cloud_identifier.txt': 'CloudStack-{0b7a3e1f-9c2d-4e5f-8a6b-7c8d9e0f1a2b}',
      'cloudstack/metadata/instance_id.txt': '7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f',
      'cloudstack/metadata/local_hostname.txt': 'vm-drive\n',
      'cloudstack/metadata/service_offering.txt': 'Small Instance',
      'cloudstack/metadata/vm_id.txt': '7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f',
      'cloudstack/metadata/public_keys.txt': `${ED}\n`,
      'cloudstack/userdata/user_data.txt': CLOUD_CONFIG,
      ...files,
    };
    for (const [k, v] of Object.entries(values)) await put(root, `/media/configdrive/${k}`, v);
  }

  it("reads Afterburn's cloudstack-configdrive attributes, keys and userdata, and asks no router", async () => {
    const svc = await service(routerRoutes());
    const env = await makeEnv({ dhcpServer: svc.authority });
    await cloudstackDrive(env.root);
    expect(await cloudstack.metadata(env)).toEqual({
      attributes: {
        COREOS_CLOUDSTACK_AVAILABILITY_ZONE: 'zone1',
        COREOS_CLOUDSTACK_CLOUD_IDENTIFIER: 'CloudStack-{0b7a3e1f-9c2d-4e5f-8a6b-7c8d9e0f1a2b}',
        COREOS_CLOUDSTACK_INSTANCE_ID: '7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f',
        COREOS_CLOUDSTACK_LOCAL_HOSTNAME: 'vm-drive',
        COREOS_CLOUDSTACK_SERVICE_OFFERING: 'Small Instance',
        COREOS_CLOUDSTACK_VM_ID: '7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f',
        COREOS_CLOUDSTACK_HOSTNAME: 'vm-drive',
        COREOS_HOSTNAME: 'vm-drive',
      },
      hostname: 'vm-drive',
      sshKeys: [ED],
      networkUnits: [],
    });
    expect((await cloudstack.userdata(env))?.toString()).toBe(CLOUD_CONFIG);
    expect(svc.hits.size).toBe(0);
  });

  it('is empty when the drive has nothing; without cloudstack/metadata the router is asked', async () => {
    const env = await makeEnv({ dhcpServer: '127.0.0.1:9' });
    await mkdir(join(env.root, 'media/configdrive/cloudstack/metadata'), { recursive: true });
    expect(await cloudstack.metadata(env)).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await cloudstack.userdata(env)).toBeNull();
    const svc = await service(routerRoutes());
    const env2 = await makeEnv({ dhcpServer: svc.authority });
    await put(env2.root, '/media/configdrive/openstack/latest/user_data', 'not cloudstack');
    expect((await cloudstack.metadata(env2)).attributes.COREOS_CLOUDSTACK_INSTANCE_ID).toBe('i-2-47-VM');
    expect((await cloudstack.userdata(env2))?.toString()).toBe(CLOUD_CONFIG);
  });

  it('drops hostile values and never follows a link off the drive', async () => {
    const env = await makeEnv({ dhcpServer: '127.0.0.1:9' });
    await put(env.root, '/etc/shadow', 'root:$6$secret');
    await cloudstackDrive(env.root, {
      'cloudstack/metadata/local_hostname.txt': 'evil\nCOREOS_IPV4_PUBLIC=6.6.6.6',
      'cloudstack/metadata/availability_zone.txt': 'zone\u00001',
      'cloudstack/metadata/public_keys.txt': `ssh-rsa ../../etc/passwd\n${ED}\n`,
    });
    await rm(join(env.root, 'media/configdrive/cloudstack/metadata/instance_id.txt'));
    await rm(join(env.root, 'media/configdrive/cloudstack/userdata/user_data.txt'));
    await link(env.root, '/media/configdrive/cloudstack/metadata/instance_id.txt', '/etc/shadow');
    await link(env.root, '/media/configdrive/cloudstack/userdata/user_data.txt', '../../../../../etc/shadow');
    const md = await cloudstack.metadata(env);
    expect(md.hostname).toBeUndefined();
    expect(md.attributes).toEqual({
      COREOS_CLOUDSTACK_CLOUD_IDENTIFIER: 'CloudStack-{0b7a3e1f-9c2d-4e5f-8a6b-7c8d9e0f1a2b}',
      COREOS_CLOUDSTACK_SERVICE_OFFERING: 'Small Instance',
      COREOS_CLOUDSTACK_VM_ID: '7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f',
    });
    expect(md.sshKeys).toEqual([ED]);
    expect(await cloudstack.userdata(env)).toBeNull();
    expect(env.lines.join('\n')).not.toContain('secret');
  });
});

describe('cloudstack: finding the router', () => {
  it('reads SERVER_ADDRESS from networkd leases, in ifindex order', async () => {
    const env = await makeEnv();
    await put(env.root, '/run/systemd/netif/leases/10', lease('10.9.9.9'));
    await put(env.root, '/run/systemd/netif/leases/3', lease());
    await put(env.root, '/run/systemd/netif/leases/2', lease('10.1.1.1'));
    expect(await dhcpServerFromLeases(env)).toBe('10.1.1.1');
    expect(await metadataBase(env, 'cloudstack')).toBe('http://10.1.1.1');
    // env.dhcpServer wins.
    expect(await metadataBase({ ...env, dhcpServer: '127.0.0.1:8080' }, 'cloudstack')).toBe('http://127.0.0.1:8080');
    expect(leaseServerAddress('SERVER_ADDRESS=10.0.0.1\n')).toBe('10.0.0.1');
    expect(leaseServerAddress('SERVER_ADDRESS=10.0.0.1/../x\n')).toBeUndefined();
  });

  it('fails without a lease or a server, and refuses a server that is not host[:port]', async () => {
    const env = await makeEnv();
    await expect(cloudstack.metadata(env)).rejects.toThrow(/SERVER_ADDRESS/);
    await put(env.root, '/run/systemd/netif/leases/2', lease());
    await expect(cloudstack.userdata(env)).rejects.toThrow(/SERVER_ADDRESS/);
    for (const bad of ['127.0.0.1/evil', 'user@127.0.0.1', '127.0.0.1:99999', 'a b', 'http://127.0.0.1']) {
      expect(() => serverAuthority(bad), bad).toThrow(/server address/);
    }
    expect(serverAuthority('::1')).toBe('[::1]');
    expect(serverAuthority('[::1]:8080')).toBe('[::1]:8080');
    expect(serverAuthority('data-server.')).toBe('data-server.');
  });

  it('never follows a symlinked leases directory out of the root', async () => {
    const outside = await tempDir('leases');
    await writeFile(join(outside, '2'), lease('10.6.6.6'));
    const env = await makeEnv();
    await link(env.root, '/run/systemd/netif/leases', outside);
    expect(await dhcpServerFromLeases(env)).toBeUndefined();
    // A lease file that is a link out of the directory is not read either.
    const env2 = await makeEnv();
    await mkdir(join(env2.root, 'run/systemd/netif/leases'), { recursive: true });
    await link(env2.root, '/run/systemd/netif/leases/2', join(outside, '2'));
    expect(await dhcpServerFromLeases(env2)).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// NIFTY Cloud: a vmtoolsd stub

/** Answers `--cmd 'info-get guestinfo.NAME'` from files in values/, like vmtoolsd; logs calls. */
const VMTOOLSD_STUB = `#!/bin/sh
dir=$(dirname "$0")
printf '%s|%s\\n' "$1" "$2" >> "$dir/calls"
[ "$1" = "--cmd" ] || { echo "usage: vmtoolsd --cmd ..." >&2; exit 64; }
case "$2" in
  "info-get guestinfo."*) name=\${2#info-get guestinfo.} ;;
  *) echo "Unknown command" >&2; exit 1 ;;
esac
[ -f "$dir/sleep" ] && sleep 5
[ -f "$dir/broken" ] && { echo "Backdoor not available" >&2; exit 2; }
if [ -f "$dir/values/$name" ]; then cat "$dir/values/$name"; echo; exit 0; fi
echo "No value found" >&2
exit 1
`;

async function vmtoolsdStub(values: Record<string, string>): Promise<{ dir: string; argv: string[]; calls: () => Promise<string[]> }> {
  const dir = await tempDir('vmtoolsd');
  await writeFile(join(dir, 'vmtoolsd'), VMTOOLSD_STUB, { mode: 0o755 });
  await mkdir(join(dir, 'values'));
  for (const [k, v] of Object.entries(values)) await writeFile(join(dir, 'values', k), v);
  return {
    dir,
    argv: ['/bin/sh', join(dir, 'vmtoolsd')],
    calls: async () => (await readFile(join(dir, 'calls'), 'utf8').catch(() => '')).split('\n').filter(Boolean),
  };
}

describe('niftycloud', () => {
  it('reads base64 userdata when set_user_data is 1, and the SSH key', async () => {
    const stub = await vmtoolsdStub({ set_user_data: '1', user_data: b64(CLOUD_CONFIG), ssh_authorized_key: ED });
    const env = await makeEnv({ vmtoolsd: stub.argv });
    expect(await niftycloud.metadata(env)).toEqual({ attributes: {}, sshKeys: [ED], networkUnits: [] });
    expect((await niftycloud.userdata(env))?.toString()).toBe(CLOUD_CONFIG);
    expect(await stub.calls()).toEqual([
      '--cmd|info-get guestinfo.ssh_authorized_key',
      '--cmd|info-get guestinfo.set_user_data',
      '--cmd|info-get guestinfo.user_data',
    ]);
  });

  it('is empty when the variables are not set, or set_user_data is not 1', async () => {
    const env = await makeEnv({ vmtoolsd: (await vmtoolsdStub({})).argv });
    expect(await niftycloud.metadata(env)).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await niftycloud.userdata(env)).toBeNull();
    const env2 = await makeEnv({ vmtoolsd: (await vmtoolsdStub({ set_user_data: '0', user_data: b64('x') })).argv });
    expect(await niftycloud.userdata(env2)).toBeNull();
    const env3 = await makeEnv({ vmtoolsd: (await vmtoolsdStub({ set_user_data: '1' })).argv });
    expect(await niftycloud.userdata(env3)).toBeNull();
    expect(env3.lines.join('\n')).toMatch(/user_data is not set/);
  });

  it('fails for garbage userdata, a missing, failing or hanging vmtoolsd', async () => {
    const env = await makeEnv({ vmtoolsd: (await vmtoolsdStub({ set_user_data: '1', user_data: 'not base64 at all!' })).argv });
    await expect(niftycloud.userdata(env)).rejects.toThrow(/not valid base64/);
    await expect(niftycloud.metadata(await makeEnv({ vmtoolsd: ['/nonexistent/vmtoolsd'] }))).rejects.toThrow(/not found/);
    const broken = await vmtoolsdStub({});
    await writeFile(join(broken.dir, 'broken'), '');
    await expect(niftycloud.metadata(await makeEnv({ vmtoolsd: broken.argv }))).rejects.toThrow(/exited with status 2.*Backdoor/);
    const slow = await vmtoolsdStub({});
    await writeFile(join(slow.dir, 'sleep'), '');
    const env4 = await makeEnv({ vmtoolsd: slow.argv, http: { tries: 1, backoffMs: 1, maxBackoffMs: 1, timeoutMs: 300 } });
    await expect(niftycloud.metadata(env4)).rejects.toThrow(/did not finish/);
  });

  it('drops a key that is not a key', async () => {
    const env = await makeEnv({ vmtoolsd: (await vmtoolsdStub({ ssh_authorized_key: 'ssh-rsa /root/.ssh/id_rsa\nrm -rf /' })).argv });
    expect((await niftycloud.metadata(env)).sshKeys).toEqual([]);
    expect(env.lines.filter((l) => /invalid SSH key/.test(l))).toHaveLength(2);
  });
});

// ---------------------------------------------------------------------------------------------
// Files: vagrant, vmware, hyperv

describe('vagrant', () => {
  const PATH = '/var/lib/coreos-vagrant/vagrantfile-user-data';
  it('reads the Vagrantfile userdata; none when missing or empty', async () => {
    const env = await makeEnv();
    expect(await vagrant.userdata(env)).toBeNull();
    await put(env.root, PATH, CLOUD_CONFIG);
    expect((await vagrant.userdata(env))?.toString()).toBe(CLOUD_CONFIG);
    expect(await vagrant.metadata(env)).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    await put(env.root, PATH, '');
    expect(await vagrant.userdata(env)).toBeNull();
  });

  it('never follows a symlink out of the root', async () => {
    const outside = await tempDir('vagrant-out');
    await writeFile(join(outside, 'vagrantfile-user-data'), 'outside');
    for (const target of [outside, '../../../../../../../..' + outside]) {
      const env = await makeEnv();
      await link(env.root, '/var/lib/coreos-vagrant', target);
      expect(await vagrant.userdata(env)).toBeNull();
    }
    const env = await makeEnv();
    await link(env.root, PATH, join(outside, 'vagrantfile-user-data'));
    expect(await vagrant.userdata(env)).toBeNull();
    // Inside the root, links are followed like a chroot would.
    await put(env.root, join(outside, 'vagrantfile-user-data'), 'inside');
    expect((await vagrant.userdata(env))?.toString()).toBe('inside');
  });

  it('refuses oversized files and things that are not regular files', async () => {
    const env = await makeEnv();
    const host = await put(env.root, PATH, '');
    const fh = await open(host, 'r+');
    await fh.truncate(16 * 1024 * 1024 + 1);
    await fh.close();
    await expect(vagrant.userdata(env)).rejects.toThrow(/larger than/);
    await rm(host);
    execFileSync('mkfifo', [host]);
    await expect(vagrant.userdata(env)).rejects.toThrow(/not a regular file/);
    await rm(host);
    await mkdir(host);
    await expect(vagrant.userdata(env)).rejects.toThrow(/not a regular file/);
  });
});

describe('vmware', () => {
  it('reads user_data from the config drive under the root', async () => {
    const env = await makeEnv();
    expect(await vmware.userdata(env)).toBeNull();
    await put(env.root, '/media/configdrive/openstack/latest/user_data', CLOUD_CONFIG);
    expect((await vmware.userdata(env))?.toString()).toBe(CLOUD_CONFIG);
    expect(await vmware.metadata(env)).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    // A config drive path that is a file is no config drive.
    const env3 = await makeEnv({ configDrive: '/mnt/file' });
    await put(env3.root, '/mnt/file', 'x');
    expect(await vmware.userdata(env3)).toBeNull();
    const env2 = await makeEnv({ configDrive: '/mnt/cd' });
    await put(env2.root, '/mnt/cd/openstack/latest/user_data', 'other');
    expect((await vmware.userdata(env2))?.toString()).toBe('other');
  });

  it('never follows a link off the config drive', async () => {
    const env = await makeEnv();
    await put(env.root, '/etc/shadow', 'root:$6$secret');
    await link(env.root, '/media/configdrive/openstack/latest/user_data', '/etc/shadow');
    expect(await vmware.userdata(env)).toBeNull();
    const env2 = await makeEnv();
    await put(env2.root, '/etc/shadow', 'root:$6$secret');
    await link(env2.root, '/media/configdrive/openstack/latest/user_data', '../../../../etc/shadow');
    expect(await vmware.userdata(env2)).toBeNull();
  });
});

describe('hyperv', () => {
  it('has nothing', async () => {
    const env = await makeEnv();
    expect(await hyperv.metadata(env)).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
    expect(await hyperv.userdata(env)).toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------
// PXE

describe('pxe', () => {
  it('serves pxe and ipxe', () => {
    expect(pxe.id).toBe('pxe');
    expect(pxe.also).toEqual(['ipxe']);
  });

  it('parses the kernel command line (quotes, last occurrence wins)', () => {
    const p = parseCmdline('BOOT_IMAGE=/vmlinuz console=ttyS0 quiet cloud-config-url="http://a/b c" flatcar.oem.id=pxe console=tty0\n');
    expect(p.get('cloud-config-url')).toBe('http://a/b c');
    expect(p.get('console')).toBe('tty0');
    expect(p.get('quiet')).toBe('');
  });

  it('fetches the URL from the command line, flatcar.config.url first', async () => {
    const svc = await service({ '/flatcar.ign': { body: '{"ignition":{"version":"3.4.0"}}' }, '/cc': { body: CLOUD_CONFIG } });
    const env = await makeEnv({ cmdline: `console=ttyS0 cloud-config-url=${svc.base}/cc flatcar.config.url=${svc.base}/flatcar.ign flatcar.oem.id=pxe` });
    expect((await pxe.userdata(env))?.toString()).toBe('{"ignition":{"version":"3.4.0"}}');
    expect(svc.hits.get('/cc')).toBeUndefined();
    const env2 = await makeEnv({ cmdline: `coreos.oem.id=pxe cloud-config-url="${svc.base}/cc"` });
    expect((await pxe.userdata(env2))?.toString()).toBe(CLOUD_CONFIG);
    expect(await pxe.metadata(env2)).toEqual({ attributes: {}, sshKeys: [], networkUnits: [] });
  });

  it('reads <root>/proc/cmdline when no command line is given', async () => {
    const svc = await service({ '/cc': { body: CLOUD_CONFIG } });
    const env = await makeEnv({ cmdline: undefined });
    await put(env.root, '/proc/cmdline', `BOOT_IMAGE=/vmlinuz coreos.config.url=${svc.base}/cc\n`);
    expect((await pxe.userdata(env))?.toString()).toBe(CLOUD_CONFIG);
  });

  it('tries again after a 500; a 404 or a dead server is an error', async () => {
    const svc = await service({ '/cc': [{ status: 500 }, { body: CLOUD_CONFIG }] });
    const env = await makeEnv({ cmdline: `cloud-config-url=${svc.base}/cc` });
    expect((await pxe.userdata(env))?.toString()).toBe(CLOUD_CONFIG);
    expect(svc.hits.get('/cc')).toBe(2);
    await expect(pxe.userdata(await makeEnv({ cmdline: `cloud-config-url=${svc.base}/missing` }))).rejects.toThrow(/404/);
    const gone = await service({});
    const url = `${gone.base}/cc`;
    await gone.close();
    services.splice(services.indexOf(gone), 1);
    await expect(pxe.userdata(await makeEnv({ cmdline: `cloud-config-url=${url}`, http: { tries: 2, backoffMs: 5, maxBackoffMs: 5, timeoutMs: 500 } }))).rejects.toThrow(
      /failed after 2 attempts/,
    );
  });

  it('falls back to the installed userdata files; skips URLs that are not http(s)', async () => {
    const env = await makeEnv({ cmdline: 'coreos.config.url=oem:///pxe.ign cloud-config-url=file:///etc/shadow flatcar.config.url=not-a-url' });
    expect(await pxe.userdata(env)).toBeNull();
    expect(env.lines.filter((l) => /ignored/.test(l))).toHaveLength(3);
    await put(env.root, '/usr/share/oem/userdata', 'oem');
    expect((await pxe.userdata(env))?.toString()).toBe('oem');
    await put(env.root, '/var/lib/coreos-install/user_data', 'installed');
    expect((await pxe.userdata(env))?.toString()).toBe('installed');
  });

  it('never follows a symlink out of the root for the fallback files', async () => {
    const outside = await tempDir('pxe-out');
    await writeFile(join(outside, 'user_data'), 'outside');
    const env = await makeEnv();
    await link(env.root, '/var/lib/coreos-install', outside);
    await link(env.root, '/usr/share/oem/userdata', `../../../../../..${outside}/user_data`);
    expect(await pxe.userdata(env)).toBeNull();
  });
});
