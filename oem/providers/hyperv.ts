/**
 * Hyper-V: the platform passes no metadata, keys or userdata; everything is empty.
 */
import type { Metadata, MetadataProvider, Userdata } from './types.js';

export const provider: MetadataProvider = {
  id: 'hyperv',
  async metadata(): Promise<Metadata> {
    return { attributes: {}, sshKeys: [], networkUnits: [] };
  },
  async userdata(): Promise<Userdata> {
    return null;
  },
};
