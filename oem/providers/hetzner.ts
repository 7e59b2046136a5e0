/**
 * hetzner: not written yet (a placeholder that returns nothing).
 */
import type { Metadata, MetadataProvider, Userdata } from './types.js';

export const provider: MetadataProvider = {
  id: 'hetzner',
  async metadata(): Promise<Metadata> {
    return { attributes: {}, sshKeys: [], networkUnits: [] };
  },
  async userdata(): Promise<Userdata> {
    return null;
  },
};
