import { Flags } from '@oclif/core';
import { OemCommand } from '../base-command.js';
import { showSize } from '../artifacts/disk-size.js';
import { loadProviders, type AgentUnit } from '../providers/registry.js';
import { agentPlatform, type AgentFeature } from '../shared/platforms.js';

/** What the agent does for a provider's image: the features its units run, and where it reads them. */
function agentReport(oemId: string, units: AgentUnit[]): { does: AgentFeature[]; reads?: string; afterburnNames?: string } {
  const info = agentPlatform(oemId);
  const does = units.filter((u) => u !== 'provision').map((u): AgentFeature => (u === 'metadata' ? 'attributes' : u));
  if (info === undefined || does.length === 0) return { does: [] };
  return { does, reads: info.reads, ...(info.afterburn !== undefined ? { afterburnNames: `AFTERBURN_${info.afterburn}_*` } : {}) };
}

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
    const providers = (await loadProviders(flags.templates)).map(({ dirs: _d, ...p }) => ({ ...p, agent: agentReport(p.oemId, p.agentUnits) }));
    if (!this.jsonEnabled()) {
      const w = Math.max(...providers.map((p) => p.id.length));
      for (const p of providers) {
        const sysext = p.flatcarPlatform ? `Flatcar's oem-${p.flatcarPlatform}` : `own extension, oem_id=${p.ignitionPlatform}`;
        const only = p.generations.length < 3 ? ` [${p.generations.join(', ')} only]` : '';
        const arch = p.architectures ? ` [${p.architectures.join(', ')} only]` : '';
        const grown = [...(p.diskSize !== undefined ? [`${showSize(p.diskSize)} disk`] : []), ...(p.rootSectors !== undefined ? [`ROOT ${showSize(p.rootSectors * 512)}`] : [])];
        const size = grown.length ? ` (${grown.join(', ')})` : '';
        this.log(`${p.id.padEnd(w)}  ${p.name}${p.aliases.length ? ` (aliases: ${p.aliases.join(', ')})` : ''}${only}${arch}`);
        this.log(`${''.padEnd(w)}  oem_id=${p.oemId}; 3760+: ${sysext}; formats: ${p.formats.join(', ')}${size}`);
        const none = p.flatcarPlatform && !p.generations.includes('coreos') ? "none (Flatcar's extension brings the platform's agents)" : 'none';
        this.log(`${''.padEnd(w)}  agent: ${p.agent.does.length ? `${p.agent.does.join(', ')} from ${p.agent.reads}` : none}`);
      }
    }
    return providers;
  }
}
