import { Flags } from '@oclif/core';
import { OemCommand } from '../base-command.js';
import { releaseFlags, releaseSource } from '../flags.js';
import { runWithProgress } from '../progress.js';
import { fetchOemSysext, fetchRelease, type FetchResult, type OemSysextResult } from '../release/fetch.js';

export default class Fetch extends OemCommand {
  static override summary = "Download a channel's release image and verify it before anything uses it.";
  static override description =
    'Resolves the release through version.txt (the channel\'s current one, or --release X.Y.Z), downloads the image, its ' +
    '.sig and .DIGESTS into a cache keyed by distro, board and version, and verifies the signature (official keys, or ' +
    '--key) and the SHA512 of .DIGESTS. Interrupted downloads resume; a cached release is re-verified, not downloaded again. ' +
    'With --oem-sysext ID (Flatcar 3760 and later), also the release\'s OEM system extension oem-ID.raw, verified the same way.';
  static override examples = [
    '<%= config.bin %> fetch',
    '<%= config.bin %> fetch --channel beta --board arm64-usr',
    '<%= config.bin %> fetch --release 3975.2.2 --json',
    '<%= config.bin %> fetch --oem-sysext azure',
    '<%= config.bin %> fetch --base-url http://mirror.example/{channel}/{board} --key mirror-key.asc',
  ];
  static override enableJsonFlag = true;
  static override flags = {
    ...releaseFlags,
    'oem-sysext': Flags.string({ description: "also fetch the release's OEM system extension for this platform id (oem-ID.raw; repeatable)", multiple: true }),
  };

  async run(): Promise<FetchResult & { oemSysexts?: OemSysextResult[] }> {
    const { flags } = await this.parse(Fetch);
    const json = this.jsonEnabled();
    const r: FetchResult & { oemSysexts?: OemSysextResult[] } = await runWithProgress(`Fetching ${flags.distro} ${flags.channel} ${flags.release}`, json, async (rep) => {
      const common = { ...(flags.key ? { keyFiles: flags.key } : {}), insecure: flags.insecure, log: (l: string) => rep.log(l), onProgress: (d: number, t: number | undefined) => rep.progress(d, t) };
      const image = await fetchRelease({ ...releaseSource(flags), ...common });
      if (!flags['oem-sysext']?.length) return image;
      const { release: _release, imageName: _imageName, ...source } = releaseSource(flags);
      const oemSysexts: OemSysextResult[] = [];
      for (const platform of flags['oem-sysext']) oemSysexts.push(await fetchOemSysext({ ...source, ...common, version: image.version, platform }));
      return { ...image, oemSysexts };
    });
    if (r.insecure) process.stderr.write('oem: WARNING: --insecure: this image was NOT verified\n');
    if (!json) {
      this.log(`${r.distro} ${r.channel} ${r.board} ${r.version}${r.cached ? ' (cached)' : ''}`);
      this.log(`image:  ${r.image}`);
      this.log(`size:   ${r.size}`);
      this.log(`sha512: ${r.sha512}`);
      if (r.verified) this.log(`signed: ${r.verified.signingKeyFingerprint} (${r.verified.key}) at ${r.verified.signedAt}`);
      for (const x of r.oemSysexts ?? []) this.log(`oem-${x.platform}.raw: ${x.path}${x.cached ? ' (cached)' : ''}, ${x.size} bytes${x.verified ? `, signed by ${x.verified.signingKeyFingerprint}` : ''}`);
    }
    return r;
  }
}
