import { Flags } from '@oclif/core';
import { OemCommand } from '../base-command.js';
import { COMPRESSIONS, type Compression } from '../compression.js';
import { FORMATS, type Format } from '../artifacts/formats.js';
import { build, type BuildResult } from '../build.js';
import { releaseFlags, releaseSource, signPassphrase } from '../flags.js';
import { runWithProgress } from '../progress.js';
import type { BuildGeneration } from '../build/base.js';
import { SYSEXT_FORMATS, type SysextFormat } from '../sysext/make.js';
import type { BackendChoice } from '../write/apply.js';
import { parseDiskSize } from '../providers/registry.js';

export default class Build extends OemCommand {
  static override summary = 'Build provider images from a channel release (fetched and verified) or a local image.';
  static override description =
    'For each provider: the base image (decompressed once) gets the provider\'s OEM content (grub.cfg, oem-release, the ' +
    'agent and its units, the provisioning config, cloud-config.yml or base/base.ign by generation) and optionally your SSH ' +
    'keys, and is written to OUTPUT-DIR/<provider>/ as {distro}_production_{provider}_image.bin.bz2 with version.txt, ' +
    '.DIGESTS and manifest.json. Outputs appear only when complete.';
  static override examples = [
    '<%= config.bin %> build --provider ec2',
    '<%= config.bin %> build --provider gce --provider azure --channel beta --ssh-key ~/.ssh/id_ed25519.pub',
    '<%= config.bin %> build --all-providers --output-dir out --json',
    '<%= config.bin %> build --provider qemu --image flatcar_production_image.bin.bz2',
    '<%= config.bin %> build --provider azure --sysext my-tools.raw --ignition config.ign',
  ];
  static override enableJsonFlag = true;
  static override flags = {
    provider: Flags.string({ char: 'p', description: 'provider to build (repeatable; see oem providers)', multiple: true }),
    'all-providers': Flags.boolean({ description: 'build every provider', default: false, exclusive: ['provider'] }),
    ...releaseFlags,
    image: Flags.string({ description: 'build from this local image (.bin or .bin.bz2) instead of fetching' }),
    signature: Flags.string({ description: 'detached signature of --image (default IMAGE.sig)', dependsOn: ['image'] }),
    'ssh-key': Flags.string({ description: 'SSH public key for core (OEM key set and ROOT; repeatable)', multiple: true }),
    config: Flags.string({ description: 'your provisioning config (YAML, version: 1), written for the agent' }),
    templates: Flags.string({ description: 'a template tree of the same layout, overlaid on the built-in one' }),
    'output-dir': Flags.string({ char: 'o', description: 'where provider outputs go', default: '.' }),
    backend: Flags.string({ description: 'how to write: mount (root), rootless, auto', options: ['auto', 'mount', 'rootless'], default: 'auto' }),
    generation: Flags.string({ description: 'force the image generation (default: detected)', options: ['coreos', 'flatcar', 'flatcar-sysext'] }),
    'oem-sysext': Flags.string({ description: "Flatcar 3760+: the release's oem-<platform>.raw to use (its .sig beside it) instead of fetching it or taking the one next to --image" }),
    sysext: Flags.string({ description: 'Flatcar 3760+: your own system extension (.raw) to put on OEM and link from /etc/extensions (repeatable)', multiple: true }),
    'sysext-format': Flags.string({ description: "Flatcar 3760+: file system of a provider's own extension", options: [...SYSEXT_FORMATS], default: 'squashfs' }),
    ignition: Flags.string({ description: 'your Ignition config (JSON), written as config.ign on OEM (Flatcar)' }),
    agent: Flags.string({ description: 'embed this oem-agent executable instead of the one built for the board' }),
    'no-agent': Flags.boolean({ description: 'build without the runtime agent and its units', default: false, exclusive: ['agent'] }),
    format: Flags.string({ description: 'artifact format (repeatable; default: the provider\'s)', multiple: true, options: [...FORMATS] }),
    compress: Flags.string({ description: 'compression of raw and disk-format artifacts', options: [...COMPRESSIONS], default: 'bz2' }),
    'disk-size': Flags.string({ description: "size of the virtual disk formats' disk, e.g. 10GiB (default: the provider's, else the image's; the raw image keeps the release's size)" }),
    'sign-key': Flags.string({ description: 'armored OpenPGP secret key: writes a detached .sig for each artifact and a clearsigned .DIGESTS.asc' }),
    'sign-passphrase-file': Flags.string({ description: 'file holding the passphrase of --sign-key (or set OEM_SIGN_PASSPHRASE)' }),
    concurrency: Flags.integer({ description: 'providers built at once (default: cores, at most 4)', min: 1 }),
    'prepare-only': Flags.boolean({ description: 'fetch, verify and decode the base into the cache, and build nothing (a CI pipeline\'s prepare job)', default: false, exclusive: ['provider', 'all-providers'] }),
  };

  async run(): Promise<BuildResult> {
    const { flags, raw } = await this.parse(Build);
    const json = this.jsonEnabled();
    const pass = await signPassphrase(flags['sign-passphrase-file']);
    const r = await runWithProgress('Building', json, (rep) =>
      build({
        providers: flags.provider ?? [],
        allProviders: flags['all-providers'],
        boardGiven: raw.some((t) => t.type === 'flag' && t.flag === 'board'),
        ...(raw.some((t) => t.type === 'flag' && t.flag === 'release') ? { releaseGiven: flags.release } : {}),
        ...(flags.image ? { image: flags.image } : {}),
        ...(flags.signature ? { signature: flags.signature } : {}),
        ...(flags.key ? { keyFiles: flags.key } : {}),
        insecure: flags.insecure,
        fetch: releaseSource(flags),
        sshKeyFiles: flags['ssh-key'] ?? [],
        ...(flags.config ? { config: flags.config } : {}),
        ...(flags.templates ? { templates: flags.templates } : {}),
        outputDir: flags['output-dir'],
        backend: flags.backend as BackendChoice,
        ...(flags.generation ? { generation: flags.generation as BuildGeneration } : {}),
        ...(flags['oem-sysext'] ? { oemSysext: flags['oem-sysext'] } : {}),
        ...(flags.sysext ? { sysexts: flags.sysext } : {}),
        sysextFormat: flags['sysext-format'] as SysextFormat,
        ...(flags.ignition ? { ignition: flags.ignition } : {}),
        ...(flags.agent ? { agent: flags.agent } : {}),
        noAgent: flags['no-agent'],
        ...(flags.format ? { formats: flags.format as Format[] } : {}),
        compress: flags.compress as Compression,
        ...(flags['disk-size'] !== undefined ? { diskSize: parseDiskSize(flags['disk-size'], '--disk-size') } : {}),
        ...(flags['sign-key'] ? { signKey: flags['sign-key'] } : {}),
        ...pass,
        ...(flags.concurrency ? { concurrency: flags.concurrency } : {}),
        prepareOnly: flags['prepare-only'],
        log: (l) => rep.log(l),
        progress: rep,
      }),
    );
    if (r.base.insecure) process.stderr.write('oem: WARNING: --insecure: the base image was NOT verified (recorded in each manifest)\n');
    if (!json) {
      this.log(`${r.distro} ${r.channel} ${r.board} ${r.version} (${r.generation === 'flatcar-sysext' ? 'provider content as system extensions' : `${r.generation}-style`}), ${r.backend} backend`);
      if (flags['prepare-only']) this.log(`base prepared in the cache (${r.base.image}); nothing built`);
      // Every artifact of every provider, one per line (the provider's name on its first).
      for (const b of r.builds) {
        const paths = b.artifacts.length ? b.artifacts.map((a) => a.path) : [b.image];
        paths.forEach((path, i) => this.log(`${(i ? '' : b.provider).padEnd(18)} ${path}`));
      }
    }
    return r;
  }
}
