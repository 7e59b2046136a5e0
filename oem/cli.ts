/**
 * oem-agent: the runtime provisioning agent embedded in provider images. One program with
 * subcommands; see `oem-agent --help`. `run(argv)` is the whole program; oem/main.ts is the entry
 * point that calls it and exits with its code.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { describe, OemError } from '../src/shared/errors.js';
import { formatProblem } from '../src/shared/config/types.js';
import { readAndValidateConfig } from '../src/shared/config/validate.js';
import { applyStorage } from './provision/disks.js';
import { provision, type StorageHook } from './provision/index.js';
import { AFTERBURN_METADATA_FILE, ATTRIBUTE_FORMATS, checkInAction, hostnameAction, metadataAction, METADATA_FILE, type AttributeFormat, networkAction, sshKeysAction, userdataAction } from './providers/actions.js';
import { defaultEnv, detectProvider, PROVIDER_IDS, type EnvOverrides } from './providers/index.js';
import type { ProviderEnv } from './providers/types.js';

export const AGENT_VERSION = '0.1.0';

const PROVIDER_OPTIONS = `options:
  --root DIR                        the system's root (default /)
  --provider ID                     the platform (default: flatcar.oem.id= or coreos.oem.id=
                                    on the kernel command line); one of:
                                    ${PROVIDER_IDS.join(', ')}
  --metadata-url URL  --wireserver-url URL  --config-drive DIR  --serial-device PATH
  --vmtoolsd CMD  --dhcp-server ADDR  --azure-dvd DIR  --cmdline TEXT
  --http-tries N  --http-timeout-ms N  --http-backoff-ms N  --http-max-backoff-ms N
                                    where to find the platform's data, and how to ask
  -h, --help                        show this help
`;

/** Each subcommand's usage line(s) and description, as `oem-agent <command> --help` prints them. */
const COMMAND_HELP = {
  validate: `usage: oem-agent validate FILE

Checks a provisioning config and prints every problem with its path, line and column.
Exit 0 when valid, 1 otherwise.
`,
  provision: `usage: oem-agent provision [--config FILE] [--root DIR] [--dry-run] [--force]

Applies the provisioning config once (first boot): storage, users, groups, files, links, systemd
and networkd units. A stamp under the root records success; a failed run leaves none.

options:
  --config FILE                     the config (default /usr/share/oem/config.yml)
  --root DIR                        the system's root (default /)
  --dry-run                         print what would be done, change nothing
  --force                           apply again even when the stamp says it was done
  -h, --help                        show this help
`,
  metadata: `usage: oem-agent metadata [--attributes FILE] [--format coreos|afterburn] [options]

Writes the platform's attributes as KEY=VALUE lines (default ${METADATA_FILE}).

  --attributes FILE                 where to write them
  --format coreos|afterburn         coreos (default): COREOS_<PLATFORM>_* names and the generic
                                    COREOS_IPV4_PUBLIC etc.; afterburn: Afterburn's names,
                                    AFTERBURN_<PLATFORM>_* (default file ${AFTERBURN_METADATA_FILE})
${PROVIDER_OPTIONS}`,
  'check-in': `usage: oem-agent check-in [options]

Tells the platform that the machine booted, where the platform expects it (Azure and Azure
Stack: the Ready health report to the WireServer; Packet: the phone-home URL; Scaleway: the
state "booted"). Elsewhere it says so and does nothing.

${PROVIDER_OPTIONS}`,
  'ssh-keys': `usage: oem-agent ssh-keys [--user USER] [options]

Writes the platform's SSH keys for USER (default core) as the key set coreos-metadata of
~USER/.ssh/authorized_keys.d, then regenerates ~USER/.ssh/authorized_keys.

  --user USER                       whose keys
${PROVIDER_OPTIONS}`,
  hostname: `usage: oem-agent hostname [options]

Writes the platform's hostname to /etc/hostname.

${PROVIDER_OPTIONS}`,
  network: `usage: oem-agent network [options]

Writes the platform's network configuration as networkd units to /etc/systemd/network.

${PROVIDER_OPTIONS}`,
  userdata: `usage: oem-agent userdata [--stamp-dir DIR] [options]

Applies the platform's userdata: an agent config (version: 1) once, a #cloud-config with
coreos-cloudinit; anything else is saved.

  --stamp-dir DIR                   where the once-only stamp is kept
${PROVIDER_OPTIONS}`,
  version: `usage: oem-agent version

Prints the agent's version.
`,
} as const;

type Command = keyof typeof COMMAND_HELP;

const USAGE = `usage: oem-agent <command> [options]

commands:
  validate FILE                     check a provisioning config (exit 1 on any error)
  provision [--config FILE] [--root DIR] [--dry-run] [--force]
                                    apply the config once (first boot; default config
                                    /usr/share/oem/config.yml, root /)
  metadata [--attributes FILE] [--format coreos|afterburn]
                                    write the platform's attributes as KEY=VALUE lines
                                    (default ${METADATA_FILE})
  ssh-keys [--user USER]            the platform's SSH keys for USER (default core), as the
                                    key set coreos-metadata of ~USER/.ssh/authorized_keys.d
  hostname                          the platform's hostname to /etc/hostname
  network                           the platform's networkd units to /etc/systemd/network
  userdata [--stamp-dir DIR]        apply the userdata: an agent config (version: 1) once,
                                    a #cloud-config with coreos-cloudinit; else save it
  check-in                          tell the platform the machine booted (Azure, Azure
                                    Stack, Packet, Scaleway)
  version                           print the version

\`oem-agent <command> --help\` shows a command's options.

options of metadata, ssh-keys, hostname, network, userdata and check-in:
${PROVIDER_OPTIONS.replace(/^options:\n/, '')}`;

/** Where the program's output goes (default: the process's stdout and stderr). */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

const PROCESS_IO: CliIo = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
};

const storageHook: StorageHook = async (storage, ctx) => {
  await applyStorage(storage, { root: ctx.root, dryRun: ctx.dryRun, run: ctx.run, log: ctx.note });
};

/** Runs oem-agent with these arguments; resolves to the exit code. */
export async function run(argv: string[], io: CliIo = PROCESS_IO): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd !== undefined && Object.hasOwn(COMMAND_HELP, cmd) && (rest.includes('--help') || rest.includes('-h'))) {
    io.stdout(COMMAND_HELP[cmd as Command]);
    return 0;
  }
  try {
    switch (cmd) {
      case 'version':
      case '--version':
        io.stdout(`oem-agent ${AGENT_VERSION} (node ${process.versions.node} ${process.arch})\n`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.stdout(USAGE);
        return cmd === undefined ? 2 : 0;
      case 'validate':
        return await validate(rest, io);
      case 'provision':
        return await runProvision(rest, io);
      case 'metadata':
      case 'ssh-keys':
      case 'hostname':
      case 'network':
      case 'userdata':
      case 'check-in':
        return await providerCommand(cmd, rest, io);
      default:
        io.stderr(`oem-agent: unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    io.stderr(`oem-agent: error: ${describe(err)}\n`);
    if (err instanceof OemError && err.hint) io.stderr(`oem-agent: hint: ${err.hint}\n`);
    return err instanceof OemError && err.code === 'usage' ? 2 : 1;
  }
}

/** Reads and validates a config; prints every problem; returns the config or null. */
async function load(path: string, io: CliIo): Promise<Awaited<ReturnType<typeof readAndValidateConfig>>['config'] | null> {
  const r = await readAndValidateConfig(path);
  for (const p of r.problems) io.stderr(`oem-agent: ${formatProblem(p)}\n`);
  return r.config ?? null;
}

async function validate(args: string[], io: CliIo): Promise<number> {
  let positionals: string[];
  try {
    positionals = parseArgs({ args, allowPositionals: true, options: {} }).positionals;
  } catch (err) {
    io.stderr(`oem-agent validate: ${describe(err)}\n${COMMAND_HELP.validate}`);
    return 2;
  }
  if (positionals.length !== 1) {
    io.stderr(COMMAND_HELP.validate);
    return 2;
  }
  const config = await load(positionals[0]!, io);
  if (!config) return 1;
  io.stdout(`oem-agent: ${positionals[0]}: valid\n`);
  return 0;
}

async function runProvision(args: string[], io: CliIo): Promise<number> {
  let values: { config: string; root: string; 'dry-run': boolean; force: boolean };
  try {
    values = parseArgs({
      args,
      options: {
        config: { type: 'string', default: '/usr/share/oem/config.yml' },
        root: { type: 'string', default: '/' },
        'dry-run': { type: 'boolean', default: false },
        force: { type: 'boolean', default: false },
      },
    }).values;
  } catch (err) {
    io.stderr(`oem-agent provision: ${describe(err)}\n${COMMAND_HELP.provision}`);
    return 2;
  }
  const config = await load(values.config, io);
  if (!config) {
    io.stderr(`oem-agent: ${values.config} is not a valid config; nothing applied\n`);
    return 1;
  }
  try {
    await provision(config, {
      root: values.root,
      dryRun: values['dry-run'],
      force: values.force,
      log: (line) => io.stdout(`${line}\n`),
      storage: storageHook,
    });
    return 0;
  } catch {
    // provision() has logged the failure; the unit's restart policy (or the next boot) tries again.
    return 1;
  }
}

// ---------------------------------------------------------------------------------------------
// The provider commands.

const COMMON_OPTIONS = {
  root: { type: 'string', default: '/' },
  provider: { type: 'string' },
  'metadata-url': { type: 'string' },
  'wireserver-url': { type: 'string' },
  'config-drive': { type: 'string' },
  'serial-device': { type: 'string' },
  vmtoolsd: { type: 'string' },
  'dhcp-server': { type: 'string' },
  'azure-dvd': { type: 'string' },
  cmdline: { type: 'string' },
  'http-tries': { type: 'string' },
  'http-timeout-ms': { type: 'string' },
  'http-backoff-ms': { type: 'string' },
  'http-max-backoff-ms': { type: 'string' },
} as const;

const EXTRA_OPTIONS = {
  metadata: { attributes: { type: 'string' }, format: { type: 'string' } },
  'ssh-keys': { user: { type: 'string' } },
  hostname: {},
  network: {},
  userdata: { 'stamp-dir': { type: 'string' } },
  'check-in': {},
} as const;

type ProviderCommand = keyof typeof EXTRA_OPTIONS;

function usage(message: string): OemError {
  return new OemError(message, { code: 'usage' });
}

function count(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value) || Number(value) < min) throw usage(`--${name} must be a whole number of at least ${min}, not ${JSON.stringify(value)}`);
  return Number(value);
}

function absoluteDir(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value === '' || value.includes('\0')) throw usage(`--${name} must be a path`);
  return resolve(value);
}

function httpUrl(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  let u: URL | undefined;
  try {
    u = new URL(value);
  } catch {
    u = undefined;
  }
  if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) throw usage(`--${name} must be an http or https URL, not ${JSON.stringify(value)}`);
  return value;
}

/** The ProviderEnv from the common options (unset ones keep their real defaults). */
export function envFromOptions(values: Record<string, string | boolean | undefined>, log: (line: string) => void): ProviderEnv {
  const str = (k: string) => {
    const v = values[k];
    return typeof v === 'string' ? v : undefined;
  };
  const url = httpUrl('metadata-url', str('metadata-url'));
  const wireServerUrl = httpUrl('wireserver-url', str('wireserver-url'));
  const vmtoolsd = str('vmtoolsd')?.trim().split(/\s+/).filter(Boolean);
  if (vmtoolsd !== undefined && vmtoolsd.length === 0) throw usage('--vmtoolsd must name a command');
  const overrides: EnvOverrides = {
    root: resolve(str('root') ?? '/'),
    metadataUrl: url,
    wireServerUrl,
    configDrive: absoluteDir('config-drive', str('config-drive')),
    serialDevice: absoluteDir('serial-device', str('serial-device')),
    vmtoolsd,
    dhcpServer: str('dhcp-server'),
    azureDvd: absoluteDir('azure-dvd', str('azure-dvd')),
    cmdline: str('cmdline'),
    log,
    http: {
      tries: count('http-tries', str('http-tries'), 1),
      timeoutMs: count('http-timeout-ms', str('http-timeout-ms'), 1),
      backoffMs: count('http-backoff-ms', str('http-backoff-ms'), 0),
      maxBackoffMs: count('http-max-backoff-ms', str('http-max-backoff-ms'), 0),
    },
  };
  return defaultEnv(overrides);
}

async function providerCommand(cmd: ProviderCommand, args: string[], io: CliIo): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    const parsed = parseArgs({ args, options: { ...COMMON_OPTIONS, ...EXTRA_OPTIONS[cmd] }, strict: true, allowPositionals: false });
    values = parsed.values as unknown as Record<string, string | boolean | undefined>;
  } catch (err) {
    io.stderr(`oem-agent ${cmd}: ${describe(err)}\n${COMMAND_HELP[cmd]}`);
    return 2;
  }
  const env = envFromOptions(values, (line) => io.stdout(`oem-agent: ${line}\n`));
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const format = str('format');
  if (format !== undefined && !(ATTRIBUTE_FORMATS as readonly string[]).includes(format)) {
    throw usage(`--format must be one of ${ATTRIBUTE_FORMATS.join(', ')}, not ${JSON.stringify(format)}`);
  }
  const provider = await detectProvider(str('provider'), env);
  if (str('metadata-url') === undefined && provider.metadataUrl !== undefined) env.metadataUrl = provider.metadataUrl;
  env.log(`${cmd}: provider ${provider.id}`);
  switch (cmd) {
    case 'metadata':
      await metadataAction({
        provider,
        env,
        ...(str('attributes') !== undefined ? { attributesFile: str('attributes')! } : {}),
        ...(format !== undefined ? { format: format as AttributeFormat } : {}),
      });
      break;
    case 'check-in':
      await checkInAction({ provider, env });
      break;
    case 'ssh-keys':
      await sshKeysAction({ provider, env, ...(str('user') !== undefined ? { user: str('user')! } : {}) });
      break;
    case 'hostname':
      await hostnameAction({ provider, env });
      break;
    case 'network':
      await networkAction({ provider, env });
      break;
    case 'userdata': {
      const stampDir = absoluteDir('stamp-dir', str('stamp-dir'));
      await userdataAction({ provider, env, ...(stampDir !== undefined ? { stampDir } : {}), provision: { storage: storageHook } });
      break;
    }
  }
  return 0;
}
