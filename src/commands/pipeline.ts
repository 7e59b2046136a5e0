import { Flags } from '@oclif/core';
import { writeFile } from 'node:fs/promises';
import { OemCommand } from '../base-command.js';
import { FORMATS, type Format } from '../artifacts/formats.js';
import { COMPRESSIONS } from '../compression.js';
import { SYSEXT_FORMATS } from '../sysext/make.js';
import { releaseFlags } from '../flags.js';
import { describePlan, makePipeline, type PlanGroup, type Skipped } from '../pipeline/index.js';
import { OemError } from '../shared/errors.js';

export default class Pipeline extends OemCommand {
  static override summary = "Write a CI pipeline (GitHub Actions or GitLab CI) that builds a release's providers in parallel jobs.";
  static override description =
    'A prepare job fetches, verifies and decodes the base once into the CI cache (oem build --prepare-only); a matrix of ' +
    'build jobs each builds a group of providers, balanced by the estimated work of their formats; a publish job needs ' +
    'them all and runs oem publish on their artifacts, signing with the OEM_SIGN_KEY secret (GitHub) or the ' +
    'OEM_SIGN_KEY_FILE file variable (GitLab). The groups go to stderr (or --json).';
  static override examples = [
    '<%= config.bin %> pipeline --ci github --all-providers --output .github/workflows/oem-release.yml',
    '<%= config.bin %> pipeline --ci gitlab --provider ec2 --provider gce --provider azure --jobs 2 --output .gitlab-ci.yml',
  ];
  static override enableJsonFlag = true;
  static override flags = {
    ci: Flags.string({ description: 'CI engine', options: ['github', 'gitlab'], required: true }),
    provider: Flags.string({ char: 'p', description: 'provider to build (repeatable; see oem providers)', multiple: true }),
    'all-providers': Flags.boolean({ description: 'build every provider', default: false, exclusive: ['provider'] }),
    ...releaseFlags,
    'cache-dir': Flags.string({ description: 'the cache directory in the jobs, relative to the checkout (kept by the CI cache)', default: '.oem-cache' }),
    format: Flags.string({ description: "artifact format (repeatable; default: each provider's)", multiple: true, options: [...FORMATS] }),
    jobs: Flags.integer({ description: 'build jobs (default: enough for the work, at most one per provider)', min: 1 }),
    output: Flags.string({ char: 'o', description: 'write the pipeline here (default: stdout)' }),
    'oem-command': Flags.string({ description: 'the command that runs oem in the jobs (the OEM variable)', default: 'oem' }),
    'source-date-epoch': Flags.string({ description: "a fixed SOURCE_DATE_EPOCH for every job (default: the pipeline's own, else the prepare job's time)" }),
    'runs-on': Flags.string({ description: 'GitHub: the runner label of every job', default: 'ubuntu-latest' }),
    'ci-image': Flags.string({ description: 'GitLab: the image of every job', default: 'node:20-bookworm' }),
    'oem-package': Flags.string({
      description: 'install oem in every job with npm install -g from this (a tarball of npm pack, its URL, a registry name, a directory), with the Debian packages it needs',
    }),
    // What the build jobs pass on to oem build (paths relative to the checkout, as the jobs see them).
    templates: Flags.string({ description: 'build jobs: a template tree overlaid on the built-in one (relative to the checkout)' }),
    config: Flags.string({ description: 'build jobs: your provisioning config (relative to the checkout)' }),
    'ssh-key': Flags.string({ description: 'build jobs: SSH public key for core (relative to the checkout; repeatable)', multiple: true }),
    ignition: Flags.string({ description: 'build jobs: your Ignition config (relative to the checkout)' }),
    sysext: Flags.string({ description: 'build jobs: your own system extension (relative to the checkout; repeatable)', multiple: true }),
    'sysext-format': Flags.string({ description: "build jobs: file system of a provider's own extension", options: [...SYSEXT_FORMATS] }),
    compress: Flags.string({ description: 'build jobs: compression of raw and disk-format artifacts', options: [...COMPRESSIONS] }),
    'disk-size': Flags.string({ description: "build jobs: size of the virtual disk formats' disk, e.g. 10GiB" }),
    agent: Flags.string({ description: 'build jobs: embed this oem-agent executable (relative to the checkout)' }),
    'no-agent': Flags.boolean({ description: 'build jobs: build without the runtime agent', default: false }),
    backend: Flags.string({ description: 'build jobs: how to write', options: ['auto', 'mount', 'rootless'] }),
  };

  async run(): Promise<{ ci: string; output: string | null; total: number; jobs: PlanGroup[]; skipped: Skipped[]; notes: string[]; pipeline?: string }> {
    const { flags } = await this.parse(Pipeline);
    const json = this.jsonEnabled();
    if (!flags.provider?.length && !flags['all-providers']) {
      throw new OemError('no provider given: use --provider P (repeatable) or --all-providers', { code: 'usage', hint: 'see oem providers' });
    }
    const { plan, text, skipped, notes } = await makePipeline({
      ci: flags.ci as 'github' | 'gitlab',
      providers: flags.provider ?? [],
      allProviders: flags['all-providers'],
      ...(flags.jobs !== undefined ? { jobs: flags.jobs } : {}),
      oem: flags['oem-command'],
      distro: flags.distro,
      channel: flags.channel,
      board: flags.board,
      release: flags.release,
      ...(flags['base-url'] ? { baseUrl: flags['base-url'] } : {}),
      ...(flags['image-name'] ? { imageName: flags['image-name'] } : {}),
      keys: flags.key ?? [],
      insecure: flags.insecure,
      cacheDir: flags['cache-dir'].replace(/\/+$/, ''),
      ...(flags.format?.length ? { formats: flags.format as Format[] } : {}),
      ...(flags['source-date-epoch'] !== undefined ? { sourceDateEpoch: flags['source-date-epoch'] } : {}),
      runsOn: flags['runs-on'],
      ciImage: flags['ci-image'],
      ...(flags['oem-package'] !== undefined ? { oemPackage: flags['oem-package'] } : {}),
      build: {
        ...(flags.templates !== undefined ? { templates: flags.templates } : {}),
        ...(flags.config !== undefined ? { config: flags.config } : {}),
        ...(flags['ssh-key'] ? { sshKeys: flags['ssh-key'] } : {}),
        ...(flags.ignition !== undefined ? { ignition: flags.ignition } : {}),
        ...(flags.sysext ? { sysexts: flags.sysext } : {}),
        ...(flags['sysext-format'] !== undefined ? { sysextFormat: flags['sysext-format'] } : {}),
        ...(flags.compress !== undefined ? { compress: flags.compress } : {}),
        ...(flags['disk-size'] !== undefined ? { diskSize: flags['disk-size'] } : {}),
        ...(flags.agent !== undefined ? { agent: flags.agent } : {}),
        noAgent: flags['no-agent'],
        ...(flags.backend !== undefined ? { backend: flags.backend } : {}),
      },
      argv: recorded(this.argv),
    });
    if (flags.output) await writeFile(flags.output, text);
    else if (!json) process.stdout.write(text);
    if (!json) {
      for (const s of skipped) process.stderr.write(`oem: skipping ${s.provider}: ${s.why}\n`);
      for (const n of notes) process.stderr.write(`oem: ${n}\n`);
      for (const l of describePlan(plan)) process.stderr.write(`oem: ${l}\n`);
    }
    return { ci: flags.ci, output: flags.output ?? null, total: plan.total, jobs: plan.groups, skipped, notes, ...(flags.output ? {} : { pipeline: text }) };
  }
}

/** The arguments recorded in the pipeline: not --json nor where it was written (the same file wherever it goes). */
function recorded(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json' || a.startsWith('--output=') || /^-o./.test(a)) continue;
    if (a === '--output' || a === '-o') {
      i++;
      continue;
    }
    out.push(a);
  }
  return out;
}
