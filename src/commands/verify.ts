import { Args, Flags } from '@oclif/core';
import { lstat, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { OemCommand } from '../base-command.js';
import { OemError } from '../shared/errors.js';
import { readBounded, ReadRefused } from '../shared/safe-fs.js';
import { checkDigests, loadTrustedKeys, verifyCleartext, verifyDetached, type Distro } from '../release/verify.js';

export default class Verify extends OemCommand {
  static override summary = 'Verify a local file against its detached OpenPGP signature (and its .DIGESTS).';
  static override description =
    'Uses FILE.sig unless --signature is given, and the bundled official Flatcar and CoreOS keys unless --key is given. ' +
    'When FILE.DIGESTS exists (or --digests is given), its SHA512 line is checked too; a clearsigned FILE.DIGESTS.asc ' +
    'is checked against the same keys, and then its SHA512 line.';
  static override examples = [
    '<%= config.bin %> verify flatcar_production_image.bin.bz2',
    '<%= config.bin %> verify image.bin.bz2 --signature image.bin.bz2.sig --key my-release-key.asc --json',
  ];
  static override enableJsonFlag = true;
  static override args = { file: Args.string({ description: 'file to verify', required: true }) };
  static override flags = {
    signature: Flags.string({ description: 'detached signature (default FILE.sig)' }),
    key: Flags.string({ description: 'trust this public key file instead of the bundled official keys (repeatable)', multiple: true }),
    digests: Flags.string({
      description: '.DIGESTS or clearsigned .DIGESTS.asc to check the SHA512 against (default: FILE.DIGESTS and FILE.DIGESTS.asc, those that exist)',
    }),
  };

  async run() {
    const { args, flags } = await this.parse(Verify);
    const file = args.file;
    const st = await stat(file).catch(() => null);
    if (!st) throw new OemError(`no such file: ${file}`, { code: 'usage' });
    if (!st.isFile()) throw new OemError(`not a regular file: ${file}`, { code: 'usage', hint: 'verify a release file: an image, an extension or an artifact' });
    const sigPath = flags.signature ?? `${file}.sig`;
    const sig = await readSmall(sigPath, 'the signature', 1024 * 1024);
    if (sig === null) throw new OemError(`no signature: ${sigPath} does not exist`, { code: 'verification', hint: 'pass it with --signature FILE' });
    let trusted;
    if (flags.key?.length) trusted = await loadTrustedKeys('flatcar', flags.key);
    else {
      const both = await Promise.all((['flatcar', 'coreos'] as Distro[]).map((d) => loadTrustedKeys(d)));
      trusted = { keys: both.flatMap((t) => t.keys), source: 'the bundled Flatcar and CoreOS image signing keys' };
    }
    // Digest files: the one given, else FILE.DIGESTS and FILE.DIGESTS.asc, whichever exist; read
    // (or refused) before the signature is checked. A clearsigned one counts only once its signature
    // verifies, and only its signed text is read.
    const candidates = flags.digests ? [flags.digests] : [`${file}.DIGESTS`, `${file}.DIGESTS.asc`];
    const found: { path: string; data: string }[] = [];
    for (const path of candidates) {
      const bytes = await readSmall(path, 'the digests', 1024 * 1024);
      if (bytes === null) {
        if (flags.digests) throw new OemError(`cannot read ${flags.digests}: it does not exist`, { code: 'usage' });
        continue;
      }
      found.push({ path, data: bytes.toString('utf8') });
    }
    const v = await verifyDetached(file, sig, basename(sigPath), trusted);
    let digests: string | null = null;
    let signedDigests: string | null = null;
    for (const { path, data } of found) {
      if (data.includes('-----BEGIN PGP SIGNED MESSAGE-----')) {
        const signed = await verifyCleartext(data, basename(path), trusted);
        checkDigests(signed, basename(path), basename(file), v.sha512);
        signedDigests = path;
      } else {
        checkDigests(data, basename(path), basename(file), v.sha512);
        digests = path;
      }
    }
    const result = { ...v, signature: sigPath, digests, signedDigests, verified: true };
    if (!this.jsonEnabled()) {
      this.log(`${file}: good signature by subkey ${v.signingKeyFingerprint} of ${v.key}, made ${v.signedAt}`);
      if (digests) this.log(`${file}: SHA512 matches ${digests}`);
      if (signedDigests) this.log(`${file}: SHA512 matches ${signedDigests} (good signature)`);
    }
    return result;
  }
}

/**
 * A small file's bytes (readBounded: a regular file, a FIFO refused without hanging), or null if
 * nothing is at `path`, not even a dangling symlink. A file named as evidence is never skipped.
 */
async function readSmall(path: string, what: string, max: number): Promise<Buffer | null> {
  const bytes = await readBounded(path, max, { what: `${what} ${path}` }).catch((err: unknown) => {
    throw err instanceof ReadRefused ? new OemError(err.message, { code: 'verification' }) : err;
  });
  if (bytes === null && (await lstat(path).catch(() => null))) throw new OemError(`cannot read ${what} ${path}: a symlink to nothing`, { code: 'verification' });
  return bytes;
}
