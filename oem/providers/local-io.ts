/**
 * Small pieces the local and LAN providers share (azure, cloudsigma, cloudstack, exoscale,
 * niftycloud, vagrant, vmware, pxe): bounded reads of files under the system root that never leave
 * it, strict base64, and running a command with a time and size limit. (Values, keys and hostnames
 * are checked with values.ts, HTTP goes through http.ts.)
 *
 * Files are read the way a chroot at `env.root` would see them (readFileIn in src/shared/safe-fs.ts),
 * so a link can never lead out of the root. A directory below the root (a config drive, the Azure
 * DVD) can be made the boundary in the same way.
 */
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { describe, OemError } from '../../src/shared/errors.js';
import { readFileIn, resolveIn } from '../../src/shared/safe-fs.js';
import type { ProviderEnv } from './types.js';

/** Largest userdata accepted from any source, as fetched and after gunzip (the one limit). */
export const MAX_USERDATA_BYTES = 16 * 1024 * 1024;
/** Largest small metadata file (lease files, the kernel command line, a hostname...). */
export const MAX_SMALL_BYTES = 256 * 1024;
/** Largest document that carries userdata encoded in base64 (ovf-env.xml, a server context). */
export const MAX_ENVELOPE_BYTES = Math.ceil((MAX_USERDATA_BYTES * 4) / 3) + 1024 * 1024;

/**
 * Reads `rel` inside the directory `base` of the system (env.root), with `base` as the boundary:
 * links in `base` itself resolve inside the root, links below it never leave `base`.
 */
export async function readFileBelow(env: ProviderEnv, base: string, rel: string, limit: number): Promise<Buffer | null> {
  const dir = await resolveIn(env.root, base);
  if (dir === null || !(await stat(dir)).isDirectory()) return null;
  return readFileIn(dir, rel, limit);
}

/** Reads a file of the system (under env.root). */
export async function readRootFile(env: ProviderEnv, path: string, limit: number): Promise<Buffer | null> {
  return readFileIn(env.root, path, limit);
}

/** Userdata as a provider returns it: empty means none; larger than MAX_USERDATA_BYTES is an error. */
export function userdataOrNull(data: Buffer | null, what = 'the userdata'): Buffer | null {
  if (data !== null && data.length > MAX_USERDATA_BYTES) throw new OemError(`${what} is larger than ${MAX_USERDATA_BYTES} bytes`);
  return data === null || data.length === 0 ? null : data;
}

/** Decodes standard base64 (whitespace ignored) strictly; throws an OemError naming `what`. */
export function decodeBase64(text: string, what: string): Buffer {
  const compact = text.replace(/[\s]+/g, '');
  if (compact === '') return Buffer.alloc(0);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 !== 0) {
    throw new OemError(`${what} is not valid base64`);
  }
  return Buffer.from(compact, 'base64');
}

export interface CommandResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/**
 * Runs a command (no shell) with a time limit and a limit on its output. A command that cannot be
 * started, times out or prints too much is an OemError; a non-zero exit is returned.
 */
export function runCommand(argv: string[], opts: { timeoutMs: number; maxBytes: number }): Promise<CommandResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined || cmd === '') return Promise.reject(new OemError('no command given'));
  const what = argv.join(' ');
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { encoding: 'buffer', timeout: opts.timeoutMs, maxBuffer: opts.maxBytes, killSignal: 'SIGKILL', windowsHide: true },
      (err, stdout, stderr) => {
        const errText = stderr.toString('utf8');
        if (err === null) {
          resolve({ code: 0, stdout, stderr: errText });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: string | number; killed?: boolean; signal?: string | null };
        if (typeof e.code === 'number') {
          resolve({ code: e.code, stdout, stderr: errText });
          return;
        }
        if (e.code === 'ENOENT') {
          reject(new OemError(`cannot run ${cmd}: command not found`, { code: 'missingTool', cause: err }));
        } else if (e.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') {
          reject(new OemError(`${what} printed more than ${opts.maxBytes} bytes`, { cause: err }));
        } else if (e.killed) {
          reject(new OemError(`${what} did not finish within ${opts.timeoutMs} ms`, { cause: err }));
        } else if (e.signal) {
          reject(new OemError(`${what} was killed by ${e.signal}`, { cause: err }));
        } else {
          reject(new OemError(`cannot run ${what}: ${describe(err)}`, { cause: err }));
        }
      },
    );
  });
}

