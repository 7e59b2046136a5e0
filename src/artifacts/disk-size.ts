/**
 * A platform's disk size: Flatcar grows the image for some platforms (Exoscale's qcow2 is a 10 GiB
 * disk). The working image is extended in place (sparse: no data is written) and the GPT's backup
 * header and entries are moved to the new end with `sgdisk -e`, so the table stays valid on the
 * larger disk; ROOT keeps its size and is grown at first boot, as on every Container Linux disk.
 */
import { stat, truncate } from 'node:fs/promises';
import { OemError } from '../shared/errors.js';
import { requireTool, run } from '../tools.js';

const MiB = 1024 * 1024;

export const showSize = (n: number) => (n % (1024 * MiB) === 0 ? `${n / (1024 * MiB)} GiB` : `${n / MiB} MiB`);

/** Grows the disk image at `path` to `size` bytes (no-op when it is that size already). */
export async function growDisk(path: string, size: number): Promise<void> {
  const now = (await stat(path)).size;
  if (size === now) return;
  if (size < now) {
    throw new OemError(`the disk size ${showSize(size)} is smaller than the image (${(now / MiB).toFixed(1)} MiB)`, {
      code: 'usage',
      hint: 'give a disk size of at least the image size, or leave it out',
    });
  }
  const why = 'move the backup partition table to the end of the grown disk';
  await requireTool('sgdisk', why);
  await truncate(path, size);
  await run('sgdisk', ['-e', path], why);
}
