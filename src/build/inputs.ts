/**
 * What a build embeds besides the provider's templates, each checked before anything is fetched or
 * written: the runtime agent for the board and the provisioning config.
 */
import { execa, type Options } from 'execa';
import { chmod, open, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { formatProblem } from '../shared/config/types.js';
import { readAndValidateConfig } from '../shared/config/validate.js';
import { OemError } from '../shared/errors.js';
import { packageRoot } from '../paths.js';
import { lastLine, requireTool, toolEnv } from '../tools.js';
import { hostFile, type HostFile } from '../shared/safe-fs.js';

const AGENT_ARCH: Record<string, string> = { 'amd64-usr': 'x64', 'arm64-usr': 'arm64' };

/** Where the agent for the board is, and whether it is xz-compressed already: checked before anything is fetched. */
export interface AgentFile {
  path: string;
  compressed: boolean;
}

/** The agent for the board: the one `npm run build:agent` made, or --agent FILE (ELF or .xz); null with --no-agent. */
export async function findAgent(opts: { agent?: string; noAgent?: boolean }, board: string): Promise<AgentFile | null> {
  if (opts.noAgent) return null;
  const path = opts.agent ?? join(packageRoot(), 'dist', 'agent', `oem-agent-linux-${AGENT_ARCH[board] ?? board}.xz`);
  const st = await stat(path).catch(() => null);
  if (!st?.isFile()) {
    throw new OemError(`the runtime agent for ${board} is missing: ${path}`, {
      code: 'usage',
      hint: 'build it with `npm run build:agent`, give one with --agent FILE, or build without it with --no-agent',
    });
  }
  const head = Buffer.alloc(6);
  const fh = await open(path, 'r');
  try {
    await fh.read(head, 0, head.length, 0);
  } finally {
    await fh.close();
  }
  if (head.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return { path, compressed: true };
  if (head.subarray(0, 4).toString('latin1') !== '\x7fELF') throw new OemError(`--agent ${path} is neither an executable (ELF) nor .xz`, { code: 'usage' });
  return { path, compressed: false };
}

/**
 * The agent as OEM keeps it, xz-compressed, as a file the writes copy (it is tens of MiB: never held
 * in memory for the build): the given .xz itself, or the executable compressed into `work`.
 */
export async function agentXz(agent: AgentFile, work: string): Promise<HostFile> {
  if (agent.compressed) return hostFile(agent.path);
  const out = join(work, 'oem-agent.xz');
  await xzToFile(['-2', '-T0', '-c', agent.path], out, 'compress the agent');
  return hostFile(out);
}

/** The agent executable itself, unpacked into `work` (an extension holds it uncompressed). */
export async function agentExecutable(xz: HostFile, work: string): Promise<HostFile> {
  const out = join(work, 'oem-agent');
  await xzToFile(['-dc', xz.hostPath], out, 'unpack the agent');
  await chmod(out, 0o755); // as it goes into an extension: linked there, not copied
  return hostFile(out);
}

/**
 * Runs xz with its output into the new file `out` (removed on failure); a full disk is noSpace. xz
 * writes the file itself (its descriptor as stdout): execa's `{ file }` target would pass every byte
 * through this process and keep it, up to a limit of 100 MB that the unpacked agent exceeds.
 */
async function xzToFile(args: string[], out: string, why: string): Promise<void> {
  const xz = await requireTool('xz', why);
  const fh = await open(out, 'w');
  let r;
  try {
    r = await execa(xz, args, { env: toolEnv(), extendEnv: false, stdin: 'ignore', stdout: fh.fd, stderr: 'pipe', reject: false } as Options);
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(out, { force: true });
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw noSpaceFor(out, why);
    throw err;
  }
  if (!r.failed) return;
  await rm(out, { force: true });
  const stderr = String(r.stderr ?? '');
  if (r.code === 'ENOSPC' || r.code === 'EDQUOT' || /no space left|disk quota/i.test(stderr)) throw noSpaceFor(out, why);
  throw new OemError(`xz failed to ${why}: ${lastLine(stderr, r.shortMessage ?? `exit code ${String(r.exitCode)}`)}`);
}

function noSpaceFor(out: string, why: string): OemError {
  return new OemError(`no space left on the device of ${dirname(out)} to ${why}`, { code: 'noSpace', hint: 'free some space, or use another --output-dir' });
}

/** The user's provisioning config, validated by the agent's own validator; or the default one. */
export async function loadConfig(path: string | undefined): Promise<Buffer> {
  if (!path) return readFile(join(packageRoot(), 'templates', '_common', 'config.yml'));
  const r = await readAndValidateConfig(path);
  const errors = r.problems.filter((p) => p.severity === 'error');
  if (errors.length) {
    throw new OemError(
      `--config ${path} is not a valid provisioning config: ${formatProblem(errors[0]!)}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ''}`,
      { code: 'usage', hint: `oem validate ${path} lists every problem` },
    );
  }
  return readFile(path);
}
