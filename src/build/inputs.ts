/**
 * What a build embeds besides the provider's templates, each checked before anything is fetched or
 * written: the runtime agent for the board and the provisioning config.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { formatProblem } from '../shared/config/types.js';
import { readAndValidateConfig } from '../shared/config/validate.js';
import { OemError } from '../shared/errors.js';
import { packageRoot } from '../paths.js';
import { run } from '../tools.js';

const AGENT_ARCH: Record<string, string> = { 'amd64-usr': 'x64', 'arm64-usr': 'arm64' };

/** The agent for the board, xz-compressed: the one `npm run build:agent` made, or --agent FILE; null with --no-agent. */
export async function loadAgent(opts: { agent?: string; noAgent?: boolean }, board: string): Promise<Buffer | null> {
  if (opts.noAgent) return null;
  const path = opts.agent ?? join(packageRoot(), 'dist', 'agent', `oem-agent-linux-${AGENT_ARCH[board] ?? board}.xz`);
  const st = await stat(path).catch(() => null);
  if (!st?.isFile()) {
    throw new OemError(`the runtime agent for ${board} is missing: ${path}`, {
      code: 'usage',
      hint: 'build it with `npm run build:agent`, give one with --agent FILE, or build without it with --no-agent',
    });
  }
  const data = await readFile(path);
  if (data.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return data;
  if (data.subarray(0, 4).toString('latin1') !== '\x7fELF') throw new OemError(`--agent ${path} is neither an executable (ELF) nor .xz`, { code: 'usage' });
  const r = await run('xz', ['-6', '-T0', '-c', path], 'compress the agent', { encoding: 'buffer' } as never);
  return r.stdoutBytes;
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
