import { OemCommand } from '../base-command.js';
import { releaseFlags, releaseSource } from '../flags.js';
import { runWithProgress } from '../progress.js';
import { fetchRelease, type FetchResult } from '../release/fetch.js';

export default class Fetch extends OemCommand {
  static override summary = "Download a channel's release image and verify it before anything uses it.";
  static override description =
    'Resolves the release through version.txt (the channel\'s current one, or --release X.Y.Z), downloads the image, its ' +
    '.sig and .DIGESTS into a cache keyed by distro, board and version, and verifies the signature (official keys, or ' +
    '--key) and the SHA512 of .DIGESTS. Interrupted downloads resume; a cached release is re-verified, not downloaded again.';
  static override examples = [
    '<%= config.bin %> fetch',
    '<%= config.bin %> fetch --channel beta --board arm64-usr',
    '<%= config.bin %> fetch --release 3975.2.2 --json',
    '<%= config.bin %> fetch --base-url http://mirror.example/{channel}/{board} --key mirror-key.asc',
  ];
  static override enableJsonFlag = true;
  static override flags = releaseFlags;

  async run(): Promise<FetchResult> {
    const { flags } = await this.parse(Fetch);
    const json = this.jsonEnabled();
    const r = await runWithProgress(`Fetching ${flags.distro} ${flags.channel} ${flags.release}`, json, (rep) =>
      fetchRelease({
        ...releaseSource(flags),
        ...(flags.key ? { keyFiles: flags.key } : {}),
        insecure: flags.insecure,
        log: (l) => rep.log(l),
        onProgress: (d, t) => rep.progress(d, t),
      }),
    );
    if (r.insecure) process.stderr.write('oem: WARNING: --insecure: this image was NOT verified\n');
    if (!json) {
      this.log(`${r.distro} ${r.channel} ${r.board} ${r.version}${r.cached ? ' (cached)' : ''}`);
      this.log(`image:  ${r.image}`);
      this.log(`size:   ${r.size}`);
      this.log(`sha512: ${r.sha512}`);
      if (r.verified) this.log(`signed: ${r.verified.signingKeyFingerprint} (${r.verified.key}) at ${r.verified.signedAt}`);
    }
    return r;
  }
}
