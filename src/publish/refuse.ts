/** How `oem publish` refuses: one line naming the group and the file, a hint, and an exit code. */
import { OemError, type ExitCodeName } from '../shared/errors.js';

/** A refused group or output directory (exit 2). */
export function refuse(message: string, hint: string): OemError {
  return new OemError(message, { code: 'usage', hint });
}

/** A file whose bytes do not match what its manifest or DIGESTS say (exit 4). */
export function mismatch(message: string, hint = 'rebuild that group, or publish without it'): OemError {
  return new OemError(message, { code: 'verification' satisfies ExitCodeName, hint });
}
