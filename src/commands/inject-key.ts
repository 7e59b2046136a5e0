import { Args, Flags } from '@oclif/core';
import { OemCommand } from '../base-command.js';
import { injectKey, type InjectKeyResult } from '../inject-key.js';
import type { BackendChoice } from '../write/apply.js';

export default class InjectKey extends OemCommand {
  static override summary = 'Make a local image with your SSH key: writes authorized_keys for core on the ROOT partition.';
  static override description =
    'Writes the keys to /home/USER/.ssh/authorized_keys on ROOT (directories 0700, files 0600, owned by the user) and as ' +
    'the key set /home/USER/.ssh/authorized_keys.d/oem in the update-ssh-keys layout, keeping other key sets. Keys are ' +
    'validated first. The input is never modified: the output is a new raw image next to it with _key in its name ' +
    '(or --output), unless --in-place. Accepts .bin and .bin.bz2 (.gz, .xz, .zst).';
  static override examples = [
    '<%= config.bin %> inject-key flatcar_production_image.bin.bz2 --key ~/.ssh/id_ed25519.pub',
    '<%= config.bin %> inject-key image.bin --key a.pub --key b.pub --output mine.bin --backend rootless',
    '<%= config.bin %> inject-key image.bin --key ops.pub --user ops --uid 1500 --gid 1500 --in-place',
  ];
  static override enableJsonFlag = true;
  static override args = { image: Args.string({ description: 'raw or compressed Container Linux image', required: true }) };
  static override flags = {
    key: Flags.string({ description: 'SSH public key file (authorized_keys format; repeatable)', multiple: true, required: true }),
    user: Flags.string({ description: 'user whose keys these are', default: 'core' }),
    uid: Flags.integer({ description: 'uid of --user (core: 1000)', min: 0 }),
    gid: Flags.integer({ description: 'gid of --user (core: 1000)', min: 0 }),
    output: Flags.string({ char: 'o', description: 'output image (default: next to the input, with _key in its name)' }),
    'in-place': Flags.boolean({ description: 'modify the given raw image itself', default: false, exclusive: ['output'] }),
    backend: Flags.string({ description: 'how to write: mount (root, loop devices), rootless (debugfs / btrfs rebuild), auto', options: ['auto', 'mount', 'rootless'], default: 'auto' }),
    'dry-run': Flags.boolean({ description: 'print the plan; write nothing', default: false }),
    verbose: Flags.boolean({ char: 'v', description: 'say what is done (e.g. which decompressor)', default: false }),
  };

  async run(): Promise<InjectKeyResult> {
    const { args, flags } = await this.parse(InjectKey);
    const json = this.jsonEnabled();
    const r = await injectKey({
      image: args.image,
      keyFiles: flags.key,
      user: flags.user,
      ...(flags.uid !== undefined ? { uid: flags.uid } : {}),
      ...(flags.gid !== undefined ? { gid: flags.gid } : {}),
      ...(flags.output ? { output: flags.output } : {}),
      inPlace: flags['in-place'],
      backend: flags.backend as BackendChoice,
      dryRun: flags['dry-run'],
      log: (l) => {
        if (flags.verbose || flags['dry-run']) process.stderr.write(`oem: ${l}\n`);
      },
    });
    if (!json) {
      if (r.dryRun) {
        this.log(r.planText);
        this.log('(dry run: nothing written)');
      } else {
        for (const k of r.keys) this.log(`key ${k.type} ${k.fingerprint}${k.comment ? ` ${k.comment}` : ''}`);
        this.log(`wrote ${r.output} (${r.backend} backend; key sets: ${r.keySets.join(', ')})`);
      }
    }
    return r;
  }
}
