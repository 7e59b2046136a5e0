import { Flags } from '@oclif/core';
import { OemCommand } from '../base-command.js';
import { loadProviders } from '../providers/registry.js';

export default class Providers extends OemCommand {
  static override summary = 'List the providers oem can build images for.';
  static override description = 'Each provider is data under templates/<provider>/ (plus templates/_common/); --templates overlays your own tree.';
  static override examples = ['<%= config.bin %> providers', '<%= config.bin %> providers --json'];
  static override enableJsonFlag = true;
  static override flags = {
    templates: Flags.string({ description: 'a template tree of the same layout, overlaid on the built-in one' }),
  };

  async run() {
    const { flags } = await this.parse(Providers);
    const providers = await loadProviders(flags.templates);
    if (!this.jsonEnabled()) {
      const w = Math.max(...providers.map((p) => p.id.length));
      for (const p of providers) {
        const sysext = p.flatcarPlatform ? `Flatcar's oem-${p.flatcarPlatform}` : `own extension, oem_id=${p.ignitionPlatform}`;
        const only = p.generations.length < 3 ? ` [${p.generations.join(', ')} only]` : '';
        this.log(`${p.id.padEnd(w)}  oem_id=${p.oemId.padEnd(18)} 3760+: ${sysext.padEnd(34)} ${p.name}${p.aliases.length ? ` (aliases: ${p.aliases.join(', ')})` : ''}${only}`);
      }
    }
    return providers.map(({ dirs: _d, ...p }) => p);
  }
}
