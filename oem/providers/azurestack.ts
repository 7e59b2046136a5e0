/**
 * Azure Stack (Hub): Azure's provisioning in a private cloud. As on Azure, the provisioning DVD's
 * ovf-env.xml gives the hostname, the SSH keys given by value and the userdata (CustomData), and the
 * boot check-in is the Ready health report to the WireServer (wireserver.ts: --wireserver-url, else
 * DHCP option 245, else 168.63.129.16).
 *
 * Azure Stack has no Azure IMDS and no attributes (Afterburn writes none for it either). When
 * ovf-env.xml has no hostname, the VM name comes from the one metadata endpoint Afterburn reads there,
 * env.metadataUrl + /Microsoft.Compute/identity?api-version=2019-03-11 (with `Metadata: true`),
 * a JSON object with `vmName`; a 404 there means no hostname.
 */
import { describe, OemError } from '../../src/shared/errors.js';
import { httpRequest, joinUrl } from './http.js';
import { MAX_SMALL_BYTES } from './local-io.js';
import { ovfMetadata, ovfUserdata, readOvfEnv, setHostname } from './azure.js';
import type { Metadata, MetadataProvider, ProviderEnv } from './types.js';
import { cleanHostname, shown } from './values.js';
import { reportReady } from './wireserver.js';

const ID = 'azurestack';
const IDENTITY = '/Microsoft.Compute/identity?api-version=2019-03-11';

/** vmName of the identity endpoint's answer; undefined (with a log line) when there is none. */
export function identityVmName(text: string, log: (line: string) => void): string | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(text) as unknown;
  } catch {
    log(`${ID}: ignoring the identity document: not JSON (${shown(text)})`);
    return undefined;
  }
  const name = doc !== null && typeof doc === 'object' && !Array.isArray(doc) ? (doc as { vmName?: unknown }).vmName : undefined;
  if (typeof name !== 'string') {
    log(`${ID}: the identity document has no vmName`);
    return undefined;
  }
  return name;
}

async function identityHostname(env: ProviderEnv): Promise<string | undefined> {
  let r;
  try {
    r = await httpRequest(joinUrl(env.metadataUrl, IDENTITY), env, { headers: { Metadata: 'true' }, optional: true });
  } catch (err) {
    throw new OemError(`${ID}: cannot read the VM name from the identity endpoint: ${describe(err)}`, { code: 'network', cause: err });
  }
  if (r === null) {
    env.log(`${ID}: the identity endpoint has no VM name (HTTP 404)`);
    return undefined;
  }
  if (r.body.length > MAX_SMALL_BYTES) {
    env.log(`${ID}: ignoring the identity document: larger than ${MAX_SMALL_BYTES} bytes`);
    return undefined;
  }
  return cleanHostname(identityVmName(r.body.toString('utf8'), env.log), env.log, 'the identity vmName');
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md = ovfMetadata(await readOvfEnv(env, ID), env);
  if (md.hostname === undefined) setHostname(md, await identityHostname(env));
  return md;
}

export const provider: MetadataProvider = {
  id: ID,
  metadata,
  userdata: (env: ProviderEnv) => ovfUserdata(env, ID),
  checkIn: (env: ProviderEnv) => reportReady(env, ID),
};
