/**
 * The names of the compressions, one set for everything: what `oem build --compress` takes, what
 * manifests and `oem inspect` report, and what an input is detected as. They are the file name
 * suffixes of the releases (`.bin.bz2`).
 */
export type Compression = 'bz2' | 'gz' | 'xz' | 'zst' | 'none';

/** All compressions, in the order offered to users. */
export const COMPRESSIONS: readonly Compression[] = ['bz2', 'gz', 'xz', 'zst', 'none'];

/** File name suffix of each compression ('' for none). */
export const COMPRESSION_SUFFIX: Readonly<Record<Compression, string>> = {
  bz2: '.bz2',
  gz: '.gz',
  xz: '.xz',
  zst: '.zst',
  none: '',
};
