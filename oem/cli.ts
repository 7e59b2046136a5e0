/**
 * oem-agent: the runtime provisioning agent embedded in provider images. One program with
 * subcommands; see `oem-agent --help`.
 */
import { parseArgs } from 'node:util';
import { formatProblem } from './config/types.js';
import { readAndValidateConfig } from './config/validate.js';
import { applyStorage } from './provision/disks.js';
import { provision } from './provision/index.js';

export const AGENT_VERSION = '0.1.0';

const USAGE = `usage: oem-agent <command> [options]

commands:
  validate FILE                     check a provisioning config (exit 1 on any error)
  provision [--config FILE] [--root DIR] [--dry-run] [--force]
                                    apply the config once (first boot; default config
                                    /usr/share/oem/config.yml, root /)
  version                           print the version
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'version':
    case '--version':
      process.stdout.write(`oem-agent ${AGENT_VERSION} (node ${process.versions.node} ${process.arch})\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    case 'validate':
      return validate(rest);
    case 'provision':
      return runProvision(rest);
    default:
      process.stderr.write(`oem-agent: unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
      return 2;
  }
}

/** Reads and validates a config; prints every problem; returns the config or null. */
async function load(path: string): Promise<Awaited<ReturnType<typeof readAndValidateConfig>>['config'] | null> {
  const r = await readAndValidateConfig(path);
  for (const p of r.problems) process.stderr.write(`oem-agent: ${formatProblem(p)}\n`);
  return r.config ?? null;
}

async function validate(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  if (positionals.length !== 1) {
    process.stderr.write('usage: oem-agent validate FILE\n');
    return 2;
  }
  const config = await load(positionals[0]!);
  if (!config) return 1;
  process.stdout.write(`oem-agent: ${positionals[0]}: valid\n`);
  return 0;
}

async function runProvision(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', default: '/usr/share/oem/config.yml' },
      root: { type: 'string', default: '/' },
      'dry-run': { type: 'boolean', default: false },
      force: { type: 'boolean', default: false },
    },
  });
  const config = await load(values.config);
  if (!config) {
    process.stderr.write(`oem-agent: ${values.config} is not a valid config; nothing applied\n`);
    return 1;
  }
  try {
    await provision(config, {
      root: values.root,
      dryRun: values['dry-run'],
      force: values.force,
      storage: async (storage, ctx) => {
        await applyStorage(storage, { root: ctx.root, dryRun: ctx.dryRun, run: ctx.run, log: ctx.note });
      },
    });
    return 0;
  } catch {
    // provision() has logged the failure; the unit's restart policy (or the next boot) tries again.
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`oem-agent: error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
