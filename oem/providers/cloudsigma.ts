/**
 * CloudSigma: the server context, read over the second serial port (env.serialDevice, default
 * /dev/ttyS1). The documented protocol: put the terminal in raw mode without echo, send `<\n\n>`
 * (an empty path between angle brackets: the whole context), and read the answer, a single-line
 * JSON object followed by a newline and EOT (0x04).
 *
 * From the context: `name` (else `uuid`) -> hostname; `meta.ssh_public_key` -> SSH keys;
 * `meta["cloudinit-user-data"]` -> userdata, base64 when `meta.base64_fields` (comma-separated)
 * names it; each NIC's `runtime.ip_v4.uuid` (the address), else `ip_v4_conf.ip.uuid` for static
 * ones -> COREOS_IPV4_PUBLIC for public NICs, COREOS_IPV4_PRIVATE for `interface_type` private.
 *
 * A session is one exchange on the device; the metadata and userdata of one env share it.
 */
import { execFile } from 'node:child_process';
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { isatty, ReadStream } from 'node:tty';
import { describe, OemError } from '../../src/shared/errors.js';
import { RetriesExhausted, withRetries } from '../../src/shared/retry.js';
import { decodeBase64, MAX_ENVELOPE_BYTES, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanSshKeys, shown } from './values.js';

const REQUEST_ALL = '<\n\n>';
const EOT = 0x04;
const USERDATA_FIELD = 'cloudinit-user-data';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: Json | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Best effort `stty -F dev raw -echo`; the stream below sets raw mode too. */
function stty(device: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    execFile('stty', ['-F', device, 'raw', '-echo'], { timeout: timeoutMs }, () => resolve());
  });
}

/**
 * One request on the serial device: sends `<\n\n>` and resolves with the first EOT-terminated
 * answer that is a JSON object (stale output from earlier exchanges is skipped). Rejects after
 * `timeoutMs` without one.
 */
async function exchange(device: string, timeoutMs: number, log: (line: string) => void): Promise<JsonObject> {
  let fd: number;
  try {
    // O_NONBLOCK: a serial port must not block the open waiting for a carrier.
    fd = openSync(device, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK);
  } catch (err) {
    throw new OemError(`cloudsigma: cannot open the server context device ${device}: ${describe(err)}`, { cause: err });
  }
  if (!isatty(fd)) {
    closeSync(fd);
    throw new OemError(`cloudsigma: ${device} is not a terminal`);
  }
  await stty(device, 2000);
  // The stream owns the descriptor from here on and closes it when destroyed.
  let stream: ReadStream;
  try {
    stream = new ReadStream(fd);
  } catch (err) {
    closeSync(fd);
    throw new OemError(`cloudsigma: cannot read ${device}: ${describe(err)}`, { cause: err });
  }
  try {
    stream.setRawMode(true);
  } catch (err) {
    log(`cloudsigma: cannot set ${device} to raw mode: ${describe(err)}`);
  }
  return new Promise<JsonObject>((resolve, reject) => {
    let pending: Buffer[] = [];
    let size = 0;
    let finished = false;
    const finish = (err: Error | null, value?: JsonObject) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      stream.removeAllListeners('data');
      stream.on('error', () => undefined);
      stream.destroy();
      if (err) reject(err);
      else resolve(value as JsonObject);
    };
    const timer = setTimeout(
      () => finish(new OemError(`cloudsigma: no server context from ${device} within ${timeoutMs} ms`, { code: 'network' })),
      timeoutMs,
    );
    stream.on('error', (err) => finish(new OemError(`cloudsigma: reading ${device}: ${describe(err)}`, { cause: err })));
    stream.on('data', (chunk: Buffer) => {
      let rest = chunk;
      while (rest.length > 0) {
        const eot = rest.indexOf(EOT);
        const part = eot === -1 ? rest : rest.subarray(0, eot);
        size += part.length;
        if (size > MAX_ENVELOPE_BYTES) {
          finish(new OemError(`cloudsigma: the server context from ${device} is larger than ${MAX_ENVELOPE_BYTES} bytes`));
          return;
        }
        pending.push(Buffer.from(part));
        if (eot === -1) return;
        const answer = Buffer.concat(pending).toString('utf8').trim();
        pending = [];
        size = 0;
        rest = rest.subarray(eot + 1);
        let parsed: unknown;
        try {
          parsed = JSON.parse(answer);
        } catch {
          log(`cloudsigma: skipped an answer on ${device} that is not JSON: ${shown(answer)}`);
          continue;
        }
        if (!isObject(parsed as Json)) {
          log(`cloudsigma: skipped an answer on ${device} that is not a JSON object`);
          continue;
        }
        finish(null, parsed as JsonObject);
        return;
      }
    });
    const request = Buffer.from(REQUEST_ALL, 'latin1');
    stream.resume();
    try {
      // Four bytes: one write. If it fails (EAGAIN under flow control), the exchange is tried again.
      writeSync(fd, request);
    } catch (err) {
      finish(new OemError(`cloudsigma: writing to ${device}: ${describe(err)}`, { code: 'network', cause: err }));
    }
  });
}

/** The server context, read once per env (metadata and userdata share it; no parallel sessions). */
const sessions = new WeakMap<ProviderEnv, Promise<JsonObject>>();

export async function serverContext(env: ProviderEnv): Promise<JsonObject> {
  let p = sessions.get(env);
  if (p === undefined) {
    p = readWithRetries(env);
    sessions.set(env, p);
    p.catch(() => sessions.delete(env));
  }
  return p;
}

/** A network failure of one exchange: worth asking again (the shared retry policy, at most 5 tries). */
class AskAgain extends Error {
  constructor(readonly failure: OemError) {
    super(failure.message);
  }
}

async function readWithRetries(env: ProviderEnv): Promise<JsonObject> {
  const tries = Math.max(1, Math.min(env.http.tries, 5));
  const once = async (): Promise<JsonObject> => {
    try {
      return await exchange(env.serialDevice, env.http.timeoutMs, env.log);
    } catch (err) {
      if (err instanceof OemError && err.code === 'network') throw new AskAgain(err);
      throw err instanceof OemError ? err : new OemError(describe(err), { cause: err });
    }
  };
  try {
    return await withRetries({ tries, initialDelayMs: env.http.backoffMs, maxDelayMs: env.http.maxBackoffMs }, once, (n, err, delay) =>
      env.log(`${describe(err)}; asking again in ${delay} ms (${n}/${tries})`),
    );
  } catch (err) {
    if (err instanceof RetriesExhausted && err.last instanceof AskAgain) throw err.last.failure;
    throw err;
  }
}

/** The NICs' IPv4 addresses by kind. */
function addresses(ctx: JsonObject, env: ProviderEnv): { public?: string; private?: string } {
  const out: { public?: string; private?: string } = {};
  const nics = Array.isArray(ctx.nics) ? ctx.nics : [];
  for (const nic of nics) {
    if (!isObject(nic)) continue;
    const runtime = isObject(nic.runtime) ? nic.runtime : undefined;
    const runtimeIp = runtime && isObject(runtime.ip_v4) ? str(runtime.ip_v4.uuid) : undefined;
    const conf = isObject(nic.ip_v4_conf) ? nic.ip_v4_conf : undefined;
    const confIp = conf && isObject(conf.ip) ? str(conf.ip.uuid) : undefined;
    const ip = cleanIp(runtimeIp ?? confIp, env.log, 'a server context NIC address', 4);
    if (ip === undefined) continue;
    const kind = str(runtime?.interface_type) ?? str(conf?.interface_type) ?? (nic.vlan !== null && nic.vlan !== undefined ? 'private' : 'public');
    if (kind === 'private') out.private ??= ip;
    else out.public ??= ip;
  }
  return out;
}

export function metadataFromContext(ctx: JsonObject, env: ProviderEnv): Metadata {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const name = str(ctx.name);
  let hostname = name !== undefined && name.trim() !== '' ? cleanHostname(name.trim(), env.log, 'the server name') : undefined;
  if (hostname === undefined) hostname = cleanHostname(str(ctx.uuid), env.log, 'the server uuid');
  if (hostname !== undefined) {
    md.hostname = hostname;
    md.attributes.COREOS_HOSTNAME = hostname;
  }
  const ips = addresses(ctx, env);
  if (ips.public !== undefined) md.attributes.COREOS_IPV4_PUBLIC = ips.public;
  if (ips.private !== undefined) md.attributes.COREOS_IPV4_PRIVATE = ips.private;
  const meta = isObject(ctx.meta) ? ctx.meta : {};
  const key = str(meta.ssh_public_key);
  if (key !== undefined) md.sshKeys = cleanSshKeys([key], env.log, 'meta.ssh_public_key');
  return md;
}

export function userdataFromContext(ctx: JsonObject): Userdata {
  const meta = isObject(ctx.meta) ? ctx.meta : {};
  const value = str(meta[USERDATA_FIELD]);
  if (value === undefined || value === '') return null;
  const b64 = (str(meta.base64_fields) ?? '').split(',').map((f) => f.trim());
  const what = `meta.${USERDATA_FIELD}`;
  return userdataOrNull(b64.includes(USERDATA_FIELD) ? decodeBase64(value, what) : Buffer.from(value, 'utf8'), what);
}

export const provider: MetadataProvider = {
  id: 'cloudsigma',
  async metadata(env: ProviderEnv): Promise<Metadata> {
    return metadataFromContext(await serverContext(env), env);
  },
  async userdata(env: ProviderEnv): Promise<Userdata> {
    return userdataFromContext(await serverContext(env));
  },
};
