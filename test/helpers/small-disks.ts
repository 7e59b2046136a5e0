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

/** Writes noise (seeded by the path and offset) at the given places of the existing file `path`. */
async function writeNoise(path: string, chunks: [offset: number, length: number][]): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    for (const [offset, length] of chunks) await fh.write(noise(length, `${path}:${offset}`), 0, length, offset);
  } finally {
    await fh.close();
  }
}

/** A new sparse file of `size` bytes (no partition table) with noise at the given places. */
export async function noisyFile(path: string, size: number, chunks: [offset: number, length: number][]): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
  await writeNoise(path, chunks);
}

/** A sparse disk of `size` bytes with a GPT (an ESP and ROOT) and noise at the given places. */
export async function makeDisk(path: string, size: number, chunks: [offset: number, length: number][]): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
  await execa('sgdisk', ['-o', '-n', '1:2048:+16M', '-t', '1:ef00', '-c', '1:EFI-SYSTEM', '-n', '2:0:0', '-c', '2:ROOT', path]);
  await writeNoise(path, chunks);
}

/** `qemu-img info --output json`, as `format` (default: as qemu-img detects it). */
export async function qemuInfo(path: string, format?: string): Promise<Record<string, unknown> & { 'virtual-size': number; format: string }> {
  const { stdout } = await execa('qemu-img', ['info', ...(format ? ['-f', format] : []), '--output', 'json', path]);
  return JSON.parse(stdout) as Record<string, unknown> & { 'virtual-size': number; format: string };
}
