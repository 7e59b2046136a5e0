/**
 * systemd-networkd's DHCP leases under <root>/run/systemd/netif/leases/, one file per interface
 * (named by its ifindex), as `KEY=value` lines (`ADDRESS=10.0.0.4`, `SERVER_ADDRESS=…`,
 * `OPTION_245=a83f8110`). Read by the providers that find a service through DHCP: Azure's WireServer
 * (option 245) and CloudStack's virtual router (the DHCP server).
 *
 * The directory is resolved the way a chroot at env.root would see it, and each file is read inside
 * that directory (readFileIn): a link never leads out of the root, nor a lease file out of the
 * directory. Each file is at most MAX_SMALL_BYTES.
 */
import { readdir } from 'node:fs/promises';
import { readFileIn, resolveIn } from '../../src/shared/safe-fs.js';
import { MAX_SMALL_BYTES } from './local-io.js';
import type { ProviderEnv } from './types.js';

/** systemd-networkd's DHCP leases, one file per interface (named by ifindex). */
export const LEASES_DIR = '/run/systemd/netif/leases';

/**
 * The `KEY=value` entries of a lease file's text (a trailing CR dropped); the first line of a key
 * wins. Lines without `=`, and lines with another line break inside, are not entries.
 */
export function leaseEntries(text: string): Map<string, string> {
  const entries = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([^=]*)=(.*)$/.exec(line.replace(/\r$/, ''));
    if (m && !entries.has(m[1] ?? '')) entries.set(m[1] ?? '', m[2] ?? '');
  }
  return entries;
}

export interface Lease {
  /** The file as the system names it (`/run/systemd/netif/leases/2`). */
  file: string;
  entries: Map<string, string>;
}

/**
 * The lease files in ifindex order (other names after, by name; dot files skipped), read one at a
 * time as they are asked for, so a caller that stops at the first useful lease reads no further.
 * Nothing when the directory does not exist; a file that cannot be read is passed to `skipped` and
 * left out.
 */
export async function* readLeases(env: ProviderEnv, skipped: (file: string, err: unknown) => void): AsyncGenerator<Lease> {
  const dir = await resolveIn(env.root, LEASES_DIR);
  if (dir === null) return;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return;
    throw err;
  }
  const order = (n: string) => (/^\d+$/.test(n) ? Number(n) : Number.MAX_SAFE_INTEGER);
  names.sort((a, b) => order(a) - order(b) || (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    if (name.startsWith('.')) continue;
    const file = `${LEASES_DIR}/${name}`;
    let buf: Buffer | null;
    try {
      buf = await readFileIn(dir, `/${name}`, MAX_SMALL_BYTES);
    } catch (err) {
      skipped(file, err);
      continue;
    }
    if (buf === null) continue;
    yield { file, entries: leaseEntries(buf.toString('utf8')) };
  }
}
