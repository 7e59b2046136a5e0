/** What describes an artifact's bytes: its hashes, and the .DIGESTS text the releases publish. */
import { hashFile } from '../artifacts/hash.js';

export interface Hashes {
  md5: string;
  sha1: string;
  sha512: string;
  size: number;
}

export async function hashes(path: string): Promise<Hashes> {
  const { hex, size } = await hashFile(path, ['md5', 'sha1', 'sha512']);
  return { ...hex, size };
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
