import { Args, Flags } from '@oclif/core';
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { OemCommand } from '../base-command.js';
import { OemError } from '../shared/errors.js';
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
    if (!st?.isFile()) throw new OemError(`no such file: ${file}`, { code: 'usage' });
    const sigPath = flags.signature ?? `${file}.sig`;
    const sig = await readFile(sigPath).catch(() => {
      throw new OemError(`no signature: ${sigPath} does not exist`, { code: 'verification', hint: 'pass it with --signature FILE' });
    });
    let trusted;
    if (flags.key?.length) trusted = await loadTrustedKeys('flatcar', flags.key);
    else {
      const both = await Promise.all((['flatcar', 'coreos'] as Distro[]).map((d) => loadTrustedKeys(d)));
      trusted = { keys: both.flatMap((t) => t.keys), source: 'the bundled Flatcar and CoreOS image signing keys' };
    }
    const v = await verifyDetached(file, sig, basename(sigPath), trusted);
    // Digest files: the one given, else FILE.DIGESTS and FILE.DIGESTS.asc, whichever exist. A
    // clearsigned one counts only once its signature verifies, and only its signed text is read.
    const candidates = flags.digests ? [flags.digests] : [`${file}.DIGESTS`, `${file}.DIGESTS.asc`];
    let digests: string | null = null;
    let signedDigests: string | null = null;
    for (const path of candidates) {
      const data = await readFile(path, 'utf8').catch(() => null);
      if (data === null) {
        if (flags.digests) throw new OemError(`cannot read ${flags.digests}`, { code: 'usage' });
        continue;
      }
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
