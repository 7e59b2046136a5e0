/** What describes an artifact's bytes: its hashes, and the .DIGESTS text the releases publish. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export interface Hashes {
  md5: string;
  sha1: string;
  sha512: string;
  size: number;
}

export async function hashes(path: string): Promise<Hashes> {
  const h = { md5: createHash('md5'), sha1: createHash('sha1'), sha512: createHash('sha512') };
  let size = 0;
  for await (const c of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) {
    for (const x of Object.values(h)) x.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { md5: h.md5.digest('hex'), sha1: h.sha1.digest('hex'), sha512: h.sha512.digest('hex'), size };
}

/** A .DIGESTS file in the release format (MD5, SHA1, SHA512 sections). */
export function digestsText(entries: { name: string; md5: string; sha1: string; sha512: string }[]): string {
  const out: string[] = [];
  for (const [title, key] of [['MD5', 'md5'], ['SHA1', 'sha1'], ['SHA512', 'sha512']] as const) {
    out.push(`# ${title} HASH`);
    for (const e of entries) out.push(`${e[key]}  ${e.name}`);
  }
  return out.join('\n') + '\n';
}
