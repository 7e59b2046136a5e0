/**
 * The built agent (npm run build:agent; part of npm test) as it runs in an image: a standalone x86-64
 * executable, started with a clean environment and no node on PATH, provisioning a test root.
 * Provisioning users needs root (useradd --root chroots): [root].
 */
import { execa } from 'execa';
import { access, copyFile, mkdir, mkdtemp, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from './helpers/cli.js';
import { MetadataMock } from './helpers/metadata-mock.js';

const AGENT = join(REPO, 'dist', 'agent', 'oem-agent-linux-x64');
const PATH = '/usr/sbin:/sbin';
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-agent-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const agent = (args: string[]) => execa(AGENT, args, { env: { PATH }, extendEnv: false, reject: false });

describe('the built oem-agent executable', () => {
  it('runs without node: a clean environment and no node on PATH', async () => {
    expect((await execa('sh', ['-c', 'command -v node'], { env: { PATH }, extendEnv: false, reject: false })).exitCode).not.toBe(0);
    const r = await agent(['version']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^oem-agent \S+ \(node 22\.\d+\.\d+ x64\)$/);
    expect((await stat(AGENT)).size).toBeGreaterThan(10_000_000);
  });

  it('--help and -h on every subcommand print its usage and exit 0; a bad option prints it and exits 2', async () => {
    for (const cmd of ['validate', 'provision', 'metadata', 'ssh-keys', 'hostname', 'network', 'userdata', 'check-in', 'version']) {
      for (const flag of ['--help', '-h']) {
        const r = await agent([cmd, flag]);
        expect(r.exitCode, `${cmd} ${flag}: ${r.stderr}`).toBe(0);
        expect(r.stdout, `${cmd} ${flag}`).toMatch(new RegExp(`^usage: oem-agent ${cmd}\\b`));
        expect(r.stderr).toBe('');
      }
    }
    expect((await agent(['metadata', '--help'])).stdout).toContain('--attributes FILE');
    expect((await agent(['provision', '-h'])).stdout).toContain('--dry-run');
    const bad = await agent(['hostname', '--bogus']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/^oem-agent hostname: .*--bogus.*\nusage: oem-agent hostname/);
    const top = await agent(['--help']);
    expect(top.exitCode).toBe(0);
    expect(top.stdout).toContain('oem-agent <command> --help');
  });

  it('validate reports every problem with path, line and column, exit 1', async () => {
    const f = join(work, 'bad.yml');
    await writeFile(f, 'version: 1\nsystemd:\n  units:\n    - name: foo\n      content: "[Service]\\nExecStart=/bin/true\\n"\nfiles:\n  - path: etc/motd\n    content: hi\n');
    const r = await agent(['validate', f]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/error at \$\.systemd\.units\[0\]\.name \(line 4, col \d+\): unit name must end in \.service/);
    expect(r.stderr).toMatch(/error at \$\.files\[0\]\.path \(line 7, col \d+\): /);
    const ok = join(work, 'ok.yml');
    await writeFile(ok, 'version: 1\n');
    expect((await agent(['validate', ok])).exitCode).toBe(0);
  });

  it('fetches EC2 metadata from a mock service on 127.0.0.1 and writes /run/coreos/metadata', async () => {
    const { createServer } = await import('node:http');
    const answers: Record<string, string> = {
      '/2009-04-04/meta-data/local-ipv4': '10.0.0.5',
      '/2009-04-04/meta-data/public-ipv4': '203.0.113.7',
      '/2009-04-04/meta-data/local-hostname': 'ip-10-0-0-5.example.internal',
      '/2009-04-04/meta-data/instance-id': 'i-0123456789abcdef0',
    };
    const server = createServer((req, res) => {
      const body = answers[req.url ?? ''];
      if (body === undefined) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const root = join(work, 'mdroot');
      await mkdir(root, { recursive: true });
      const r = await agent(['metadata', '--provider', 'ec2', '--root', root, '--metadata-url', `http://127.0.0.1:${port}`, '--http-tries', '2', '--http-backoff-ms', '10']);
      expect(r.exitCode).toBe(0);
      const md = await readFile(join(root, 'run', 'coreos', 'metadata'), 'utf8');
      expect(md).toMatch(/^COREOS_IPV4_PRIVATE=10\.0\.0\.5$/m);
      expect(md).toMatch(/^COREOS_IPV4_PUBLIC=203\.0\.113\.7$/m);
      expect(md).toMatch(/^COREOS_EC2_INSTANCE_ID=i-0123456789abcdef0$/m);
    } finally {
      server.close();
    }
  });

  it('checks in with an Azure WireServer on 127.0.0.1: the goal state, then the Ready health report', async () => {
    const mock = await new MetadataMock().start();
    const goal = `<?xml version="1.0" encoding="utf-8"?>
<GoalState><Version>2012-11-30</Version><Incarnation>7</Incarnation>
  <Container><ContainerId>c0ffee00-1111-2222-3333-444455556666</ContainerId>
    <RoleInstanceList><RoleInstance><InstanceId>vm-instance-1</InstanceId><State>Started</State></RoleInstance></RoleInstanceList>
  </Container></GoalState>`;
    mock.reset({
      '/machine/': (req) => (req.query === 'comp=goalstate' ? { body: goal } : { status: 400 }),
      'POST /machine/': (req) => (req.query === 'comp=health' ? { status: 200 } : { status: 400 }),
    });
    try {
      const r = await agent(['check-in', '--provider', 'azure', '--root', work, '--wireserver-url', mock.base, '--http-tries', '2', '--http-backoff-ms', '10']);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toContain('oem-agent: azure: checked in');
      const post = mock.seen.find((x) => x.method === 'POST')!;
      expect(post.headers['x-ms-version']).toBe('2012-11-30');
      const report = post.body.toString('utf8');
      expect(report).toContain('<GoalStateIncarnation>7</GoalStateIncarnation>');
      expect(report).toContain('<ContainerId>c0ffee00-1111-2222-3333-444455556666</ContainerId>');
      expect(report).toMatch(/<InstanceId>vm-instance-1<\/InstanceId>\s*<Health>\s*<State>Ready<\/State>/);
    } finally {
      await mock.stop();
    }
  });

  it.runIf(process.getuid?.() === 0)('provisions a test root once, and does nothing on the next boot [root]', async () => {
    const root = join(work, 'root');
    await mkdir(join(root, 'etc'), { recursive: true });
    for (const f of ['passwd', 'group', 'shadow', 'gshadow']) await copyFile(join('/etc', f), join(root, 'etc', f));
    const cfg = join(work, 'config.yml');
    await writeFile(
      cfg,
      [
        'version: 1',
        'groups:',
        '  - name: ops',
        '    gid: 1500',
        'users:',
        '  - name: ops',
        '    uid: 1500',
        '    primary_group: ops',
        '    home_dir: /home/ops',
        'files:',
        '  - path: /etc/motd',
        '    content: "hello\\n"',
        '    mode: "0640"',
        '    owner: ops',
        '    group: ops',
        'systemd:',
        '  units:',
        '    - name: hello.service',
        '      enable: true',
        '      content: |',
        '        [Service]',
        '        ExecStart=/usr/bin/echo hello',
        '        [Install]',
        '        WantedBy=multi-user.target',
        'networkd:',
        '  units:',
        '    - name: 10-eth0.network',
        '      content: |',
        '        [Match]',
        '        Name=eth0',
        '        [Network]',
        '        DHCP=yes',
        '',
      ].join('\n'),
    );
    const r = await agent(['provision', '--config', cfg, '--root', root]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^oem-agent: created group ops \(gid 1500\)$/m);
    expect(r.stdout).toMatch(/^oem-agent: created user ops \(uid 1500/m);
    expect(await readFile(join(root, 'etc', 'passwd'), 'utf8')).toMatch(/^ops:x:1500:1500:/m);
    const motd = await stat(join(root, 'etc', 'motd'));
    expect([motd.mode & 0o7777, motd.uid, motd.gid]).toEqual([0o640, 1500, 1500]);
    expect(await readlink(join(root, 'etc', 'systemd', 'system', 'multi-user.target.wants', 'hello.service'))).toBe('/etc/systemd/system/hello.service');
    expect(await readFile(join(root, 'etc', 'systemd', 'network', '10-eth0.network'), 'utf8')).toContain('DHCP=yes');
    await access(join(root, 'var', 'lib', 'oem-agent', 'provisioned'));
    const again = await agent(['provision', '--config', cfg, '--root', root]);
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toMatch(/already provisioned/);
  });
});
