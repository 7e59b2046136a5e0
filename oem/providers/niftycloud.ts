/**
 * NIFTY Cloud (VMware based): values come from VMware guestinfo through `vmtoolsd --cmd
 * 'info-get guestinfo.<name>'` (env.vmtoolsd), as the platform's own OEM scripts read them:
 *
 *   guestinfo.set_user_data    "1" when userdata was given
 *   guestinfo.user_data        the userdata, base64
 *   guestinfo.ssh_authorized_key   the SSH public key chosen for the server
 *
 * A missing variable makes vmtoolsd exit non-zero with "No value found": absent. vmtoolsd itself
 * missing, hanging or failing otherwise is an error. Nothing is written back (the old scripts reset
 * the flags with info-set; the agent only reads).
 */
import { OemError } from '../../src/shared/errors.js';
import { decodeBase64, MAX_ENVELOPE_BYTES, runCommand, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanSshKeys, shown } from './values.js';

/** The value of guestinfo.<name> (one trailing newline removed), or null when it is not set. */
export async function guestinfo(env: ProviderEnv, name: string): Promise<string | null> {
  const argv = [...env.vmtoolsd, '--cmd', `info-get guestinfo.${name}`];
  const res = await runCommand(argv, { timeoutMs: env.http.timeoutMs, maxBytes: MAX_ENVELOPE_BYTES });
  if (res.code !== 0) {
    const said = `${res.stderr}\n${res.stdout.toString('utf8')}`;
    if (/no value found/i.test(said)) return null;
    throw new OemError(`${argv.join(' ')} exited with status ${res.code}: ${shown(said.trim())}`);
  }
  return res.stdout.toString('utf8').replace(/\r?\n$/, '');
}

export const provider: MetadataProvider = {
  id: 'niftycloud',

  async metadata(env: ProviderEnv): Promise<Metadata> {
    const key = await guestinfo(env, 'ssh_authorized_key');
    return {
      attributes: {},
      sshKeys: key === null ? [] : cleanSshKeys([key], env.log, 'guestinfo.ssh_authorized_key'),
      networkUnits: [],
    };
  },

  async userdata(env: ProviderEnv): Promise<Userdata> {
    const flag = await guestinfo(env, 'set_user_data');
    if (flag?.trim() !== '1') return null;
    const encoded = await guestinfo(env, 'user_data');
    if (encoded === null) {
      env.log('niftycloud: guestinfo.set_user_data is 1 but guestinfo.user_data is not set');
      return null;
    }
    return userdataOrNull(decodeBase64(encoded, 'guestinfo.user_data'), 'guestinfo.user_data');
  },
};
