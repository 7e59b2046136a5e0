import { Args, Flags } from '@oclif/core';
import { OemCommand } from '../base-command.js';
import { signPassphrase } from '../flags.js';
import type { ReleaseIndex } from '../publish/index-file.js';
import { INDEX, publishRelease, SUMS } from '../publish/release.js';

export default class Publish extends OemCommand {
  static override summary = 'Gather the provider directories of several oem build runs (groups) into one checked release directory.';
  static override description =
    'Each group (the --output-dir of one oem build run) is checked: every artifact its manifests list is there with its ' +
    'size and sha512 and a matching .DIGESTS, all groups are of one distro, board, version and base image, a provider in ' +
    'two groups is byte-identical. Then the provider directories are hard-linked (else copied) into OUTPUT-DIR, with ' +
    `${INDEX} and ${SUMS} listing every artifact. OUTPUT-DIR must not exist or be empty, and appears only when complete.`;
  static override examples = [
    '<%= config.bin %> publish out-group1 out-group2 --output-dir release',
    '<%= config.bin %> publish ci/*/out --output-dir release --sign-key release-key.asc --json',
  ];
  static override strict = false;
  static override enableJsonFlag = true;
  static override args = {
    dir: Args.string({ description: 'a group: the --output-dir of one oem build run (one or more)', required: true }),
  };
  static override flags = {
    'output-dir': Flags.string({ char: 'o', description: 'the release directory to make (must not exist, or be empty)', required: true }),
    'sign-key': Flags.string({ description: 'armored OpenPGP secret key: signs every artifact anew (.sig, .DIGESTS.asc) and the index (.asc)' }),
    'sign-passphrase-file': Flags.string({ description: 'file holding the passphrase of --sign-key (or set OEM_SIGN_PASSPHRASE)' }),
    key: Flags.string({
      description: "public key the groups' own signatures must verify against, to pass them on without --sign-key (repeatable)",
      multiple: true,
      exclusive: ['sign-key'],
    }),
  };

  async run(): Promise<ReleaseIndex> {
    const { argv, flags } = await this.parse(Publish);
    const json = this.jsonEnabled();
    const pass = await signPassphrase(flags['sign-passphrase-file']);
    const log = (l: string) => process.stderr.write(`oem: ${l}\n`);
    const r = await publishRelease({
      groups: argv as string[],
      outputDir: flags['output-dir'],
      ...(flags['sign-key'] ? { signKey: flags['sign-key'] } : {}),
      ...pass,
      ...(flags.key?.length ? { keys: flags.key } : {}),
      log,
    });
    const x = r.index;
    if (!json) {
      this.log(`${x.distro} ${x.channel} ${x.board} ${x.version}: ${x.providers.length} providers, ${x.artifacts.length} artifacts (${x.signed ? 'signed' : 'not all signed'}) in ${r.outputDir}; ${r.linked} files hard-linked, ${r.copied} copied`);
      for (const a of x.artifacts) this.log(`${a.provider.padEnd(18)} ${a.path}`);
    }
    return x;
  }
}
