import { Args, Flags } from '@oclif/core';
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { OemCommand } from '../base-command.js';
import { OemError } from '../errors.js';
import { checkDigests, loadTrustedKeys, verifyDetached, type Distro } from '../release/verify.js';

export default class Verify extends OemCommand {
  static override summary = 'Verify a local file against its detached OpenPGP signature (and its .DIGESTS).';
  static override description =
    'Uses FILE.sig unless --signature is given, and the bundled official Flatcar and CoreOS keys unless --key is given. ' +
    'When FILE.DIGESTS exists (or --digests is given), its SHA512 line is checked too.';
  static override examples = [
    '<%= config.bin %> verify flatcar_production_image.bin.bz2',
    '<%= config.bin %> verify image.bin.bz2 --signature image.bin.bz2.sig --key my-release-key.asc --json',
  ];
  static override enableJsonFlag = true;
  static override args = { file: Args.string({ description: 'file to verify', required: true }) };
  static override flags = {
    signature: Flags.string({ description: 'detached signature (default FILE.sig)' }),
    key: Flags.string({ description: 'trust this public key file instead of the bundled official keys (repeatable)', multiple: true }),
    digests: Flags.string({ description: '.DIGESTS file to check the SHA512 against (default FILE.DIGESTS when it exists)' }),
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
    const digestsPath = flags.digests ?? `${file}.DIGESTS`;
    const digests = await readFile(digestsPath).catch(() => null);
    if (flags.digests && !digests) throw new OemError(`cannot read ${flags.digests}`, { code: 'usage' });
    if (digests) checkDigests(digests.toString('utf8'), basename(digestsPath), basename(file), v.sha512);
    const result = { ...v, signature: sigPath, digests: digests ? digestsPath : null, verified: true };
    if (!this.jsonEnabled()) {
      this.log(`${file}: good signature by subkey ${v.signingKeyFingerprint} of ${v.key}, made ${v.signedAt}`);
      if (digests) this.log(`${file}: SHA512 matches ${digestsPath}`);
    }
    return result;
  }
}
