/** Small GPT disks with deterministic data for the format tests, and qemu-img's view of an image. */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { open, truncate, writeFile } from 'node:fs/promises';

/** Deterministic pseudo-random bytes (SHA-256 in counter mode). */
export function noise(length: number, seed: string): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; parts.length * 32 < length; i++) parts.push(createHash('sha256').update(`${seed}:${i}`).digest());
  return Buffer.concat(parts).subarray(0, length);
}

/** A sparse disk of `size` bytes with a GPT (an ESP and ROOT) and noise at the given places. */
export async function makeDisk(path: string, size: number, chunks: [offset: number, length: number][]): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
  await execa('sgdisk', ['-o', '-n', '1:2048:+16M', '-t', '1:ef00', '-c', '1:EFI-SYSTEM', '-n', '2:0:0', '-c', '2:ROOT', path]);
  const fh = await open(path, 'r+');
  for (const [offset, length] of chunks) await fh.write(noise(length, `${path}:${offset}`), 0, length, offset);
  await fh.close();
}

/** `qemu-img info --output json`, as `format` (default: as qemu-img detects it). */
export async function qemuInfo(path: string, format?: string): Promise<Record<string, unknown> & { 'virtual-size': number; format: string }> {
  const { stdout } = await execa('qemu-img', ['info', ...(format ? ['-f', format] : []), '--output', 'json', path]);
  return JSON.parse(stdout) as Record<string, unknown> & { 'virtual-size': number; format: string };
}
