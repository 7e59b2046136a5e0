/**
 * A platform's disk: Flatcar grows the image for some platforms. Its disk layouts make ROOT larger
 * (`disk_layout: vm`, 12943360 sectors; templates/_common/disk-layouts.yml), and Exoscale's qcow2 is a
 * 10 GiB disk (`disk_size`). The working image is extended in place (sparse: no data is written), the
 * GPT's backup header and entries are moved to the new end (`sgdisk -e`), and ROOT (partition 9, the
 * last) is given its new end with everything else of its entry kept (type, GUID, name, attributes);
 * the file system in it grows at first boot, as on every Container Linux disk.
 */
import { stat, truncate } from 'node:fs/promises';
import { FileSource } from '../image/byte-source.js';
import { readGpt, SECTOR } from '../image/gpt.js';
import { OemError } from '../shared/errors.js';
import { requireTool, run } from '../tools.js';

const MiB = 1024 * 1024;
/** The backup GPT: 32 sectors of entries and the header. */
const BACKUP_SECTORS = 33;

export const showSize = (n: number) => (n % (1024 * MiB) === 0 ? `${n / (1024 * MiB)} GiB` : `${n / MiB} MiB`);

export interface DiskGrowth {
  /** ROOT's size in sectors (Flatcar's layout), when larger than the image's. */
  rootSectors?: number;
  /** The whole disk's size in bytes (a whole number of MiB). */
  size?: number;
}

const WHY = 'grow the disk';

/** Grows the disk image at `path` as `g` says (no-op for what it is already). */
export async function growDisk(path: string, g: DiskGrowth): Promise<void> {
  await requireTool('sgdisk', 'grow the disk');
  if (g.rootSectors !== undefined) await growRoot(path, g.rootSectors);
  if (g.size !== undefined) {
    const now = (await stat(path)).size;
    if (g.size < now) {
      throw new OemError(`the disk size ${showSize(g.size)} is smaller than the image (${(now / MiB).toFixed(1)} MiB)`, {
        code: 'usage',
        hint: 'give a disk size of at least the image size, or leave it out',
      });
    }
    if (g.size > now) {
      await truncate(path, g.size);
      await run('sgdisk', ['-e', path], WHY);
    }
  }
}

/** Makes ROOT (partition 9, the last) `sectors` long, growing the disk by as much (to a whole MiB). */
async function growRoot(path: string, sectors: number): Promise<void> {
  const src = await FileSource.open(path);
  let gpt;
  try {
    gpt = await readGpt(src);
  } finally {
    await src.close();
  }
  const root = gpt.partitions.find((p) => p.number === 9);
  if (!root) throw new OemError(`${path} has no partition 9 (ROOT) to grow`);
  const last = gpt.partitions.reduce((a, p) => Math.max(a, p.lastLba), 0);
  if (root.lastLba !== last) throw new OemError(`ROOT (partition 9) is not the last partition of ${path}; it cannot grow`);
  const have = root.lastLba - root.firstLba + 1;
  if (have >= sectors) return;
  const newLast = root.firstLba + sectors - 1;
  const size = Math.ceil(((newLast + 1 + BACKUP_SECTORS) * SECTOR) / MiB) * MiB;
  if (size > (await stat(path)).size) await truncate(path, size);
  const n = '9';
  await run(
    'sgdisk',
    [
      '-e',
      '--set-alignment=1',
      `--delete=${n}`,
      `--new=${n}:${root.firstLba}:${newLast}`,
      `--typecode=${n}:${root.typeGuid}`,
      `--partition-guid=${n}:${root.uniqueGuid}`,
      `--change-name=${n}:${root.label}`,
      `--attributes=${n}:=:${root.attributes.toString(16).padStart(16, '0')}`,
      path,
    ],
    WHY,
  );
}
