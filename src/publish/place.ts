/** Putting a group's file into the release: a hard link when on the same file system, else a copy. */
import { constants } from 'node:fs';
import { copyFile, link } from 'node:fs/promises';

/**
 * Hard-links `src` to `dst`; across file systems (or where links are not allowed) copies it, as a
 * reflink where the file system can (cp --reflink=auto). Says which it did.
 */
export async function linkOrCopy(src: string, dst: string): Promise<'link' | 'copy'> {
  try {
    await link(src, dst);
    return 'link';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
  }
  await copyFile(src, dst, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
  return 'copy';
}
