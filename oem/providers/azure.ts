/**
 * Azure. Three sources:
 *
 * The provisioning DVD (mounted at env.azureDvd under the root by a unit) holds `ovf-env.xml`, the
 * OVF environment Azure writes for Linux VMs:
 *
 *   <ns0:Environment xmlns:ns0="http://schemas.dmtf.org/ovf/environment/1"
 *                    xmlns:ns1="http://schemas.microsoft.com/windowsazure">
 *     <ns1:ProvisioningSection>
 *       <ns1:LinuxProvisioningConfigurationSet>
 *         <ns1:HostName>...</ns1:HostName>
 *         <ns1:CustomData>base64</ns1:CustomData>
 *         <ns1:SSH><ns1:PublicKeys><ns1:PublicKey>
 *           <ns1:Fingerprint/><ns1:Path/><ns1:Value>ssh-rsa ...</ns1:Value>
 *         </ns1:PublicKey></ns1:PublicKeys></ns1:SSH>
 *
 * HostName gives the hostname, CustomData (base64) the userdata, and PublicKey/Value the SSH keys
 * when Azure put the key text there. Elements are matched by namespace (any prefix) and local name,
 * with the strict XML scanner of wireserver.ts.
 *
 * The WireServer (wireserver.ts): the goal state's shared configuration gives the attributes
 * COREOS_AZURE_IPV4_DYNAMIC (the VM's private address, also COREOS_IPV4_PRIVATE) and
 * COREOS_AZURE_IPV4_VIRTUAL (its load-balanced public address, also COREOS_IPV4_PUBLIC); the boot
 * check-in is the Ready health report.
 *
 * The instance metadata service (IMDS, env.metadataUrl, every request with `Metadata: true`):
 *
 *   /metadata/instance/compute/vmSize?api-version=2017-08-01&format=text   COREOS_AZURE_VMSIZE
 *   /metadata/instance/compute/name?api-version=2017-08-01&format=text     the hostname, when
 *                                                                          ovf-env.xml has none
 *   /metadata/instance/compute/publicKeys?api-version=2021-02-01           [{keyData, path}]: SSH
 *                                                                          keys, with ovf-env.xml's
 *
 * These are Afterburn's attributes and endpoints (AZURE_IPV4_DYNAMIC, AZURE_IPV4_VIRTUAL,
 * AZURE_VMSIZE; `--format afterburn` writes them as AFTERBURN_AZURE_*). A 404 means absent; a
 * service that cannot be reached is an error. The userdata comes from ovf-env.xml alone.
 */
import { describe, OemError } from '../../src/shared/errors.js';
import { httpRequest, joinUrl } from './http.js';
import { decodeBase64, MAX_ENVELOPE_BYTES, MAX_SMALL_BYTES, readFileBelow, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanSshKeys, shown } from './values.js';
import { parseXml, reportReady, sharedConfigAddresses, XmlError, xmlChildren, type XmlElement } from './wireserver.js';

export { parseXml, type XmlElement } from './wireserver.js';

const AZURE_NS = 'http://schemas.microsoft.com/windowsazure';

/** The Azure-namespace children of `el` named `local`. */
function kids(el: XmlElement | undefined, local: string): XmlElement[] {
  return xmlChildren(el, local, AZURE_NS);
}

function first(el: XmlElement | undefined, ...path: string[]): XmlElement | undefined {
  let cur = el;
  for (const p of path) cur = kids(cur, p)[0];
  return cur;
}

export interface OvfEnv {
  hostname?: string;
  customData?: string;
  /** PublicKey/Value texts (keys given by value). */
  publicKeys: string[];
}

/** The parts of an ovf-env.xml this provider uses; throws an OemError for malformed documents. */
export function parseOvfEnv(xml: string): OvfEnv {
  let root: XmlElement;
  try {
    root = parseXml(xml);
  } catch (err) {
    if (err instanceof XmlError) throw new OemError(`ovf-env.xml is not valid XML: ${err.message}`);
    throw err;
  }
  if (root.local !== 'Environment') throw new OemError(`ovf-env.xml: the root element is <${root.local}>, not an OVF <Environment>`);
  const section = kids(root, 'ProvisioningSection')[0];
  const set = kids(section, 'LinuxProvisioningConfigurationSet')[0];
  const out: OvfEnv = { publicKeys: [] };
  if (!set) return out;
  const host = first(set, 'HostName');
  if (host) out.hostname = host.text;
  const custom = first(set, 'CustomData');
  if (custom) out.customData = custom.text;
  for (const pk of kids(first(set, 'SSH', 'PublicKeys'), 'PublicKey')) {
    const value = first(pk, 'Value');
    if (value && value.text.trim() !== '') out.publicKeys.push(value.text);
  }
  return out;
}

/** ovf-env.xml from the provisioning DVD, or null (with a log line) when there is none. */
export async function readOvfEnv(env: ProviderEnv, id = 'azure'): Promise<OvfEnv | null> {
  const buf = await readFileBelow(env, env.azureDvd, 'ovf-env.xml', MAX_ENVELOPE_BYTES);
  if (buf === null) {
    env.log(`${id}: no ovf-env.xml in ${env.azureDvd}`);
    return null;
  }
  return parseOvfEnv(buf.toString('utf8'));
}

/** Metadata with the hostname and SSH keys of ovf-env.xml (none without it). */
export function ovfMetadata(ovf: OvfEnv | null, env: ProviderEnv): Metadata {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  if (ovf === null) return md;
  setHostname(md, cleanHostname(ovf.hostname?.trim(), env.log, 'the ovf-env.xml HostName'));
  md.sshKeys = cleanSshKeys(ovf.publicKeys, env.log, 'ovf-env.xml');
  return md;
}

/** Sets the hostname (and COREOS_HOSTNAME) when there is one. */
export function setHostname(md: Metadata, hostname: string | undefined): void {
  if (hostname === undefined) return;
  md.hostname = hostname;
  md.attributes.COREOS_HOSTNAME = hostname;
}

/** The userdata: ovf-env.xml's CustomData, base64-decoded. */
export async function ovfUserdata(env: ProviderEnv, id = 'azure'): Promise<Userdata> {
  const ovf = await readOvfEnv(env, id);
  if (ovf?.customData === undefined) return null;
  return userdataOrNull(decodeBase64(ovf.customData, 'the ovf-env.xml CustomData'), 'the ovf-env.xml CustomData');
}

// ---------------------------------------------------------------------------------------------
// IMDS

const IMDS_HEADERS: Readonly<Record<string, string>> = { Metadata: 'true' };
const IMDS_VMSIZE = '/metadata/instance/compute/vmSize?api-version=2017-08-01&format=text';
const IMDS_NAME = '/metadata/instance/compute/name?api-version=2017-08-01&format=text';
const IMDS_PUBLIC_KEYS = '/metadata/instance/compute/publicKeys?api-version=2021-02-01';

/** An IMDS value as text (trimmed); null when absent (404, empty) or too large (with a log line). */
async function imds(env: ProviderEnv, path: string, what: string): Promise<string | null> {
  let r;
  try {
    r = await httpRequest(joinUrl(env.metadataUrl, path), env, { headers: { ...IMDS_HEADERS }, optional: true });
  } catch (err) {
    throw new OemError(`azure: cannot read ${what} from the instance metadata service: ${describe(err)}`, { code: 'network', cause: err });
  }
  if (r === null) return null;
  if (r.body.length > MAX_SMALL_BYTES) {
    env.log(`azure: ignoring ${what} from the instance metadata service: larger than ${MAX_SMALL_BYTES} bytes`);
    return null;
  }
  const text = r.body.toString('utf8').trim();
  return text === '' ? null : text;
}

/** An Azure VM size (Standard_D2s_v3, Basic_A0, ...): a word of letters, digits, `_`, `-`, `.` and `+`. */
const VMSIZE = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;

async function vmSize(env: ProviderEnv): Promise<string | undefined> {
  const v = await imds(env, IMDS_VMSIZE, 'the VM size');
  if (v === null) return undefined;
  if (!VMSIZE.test(v)) {
    env.log(`azure: ignoring the VM size ${shown(v)}: not a VM size name`);
    return undefined;
  }
  return v;
}

/** The keyData of IMDS's publicKeys list (bad entries dropped with a log line). */
export function parseImdsPublicKeys(text: string, log: (line: string) => void): string[] {
  let list: unknown;
  try {
    list = JSON.parse(text) as unknown;
  } catch {
    log(`azure: ignoring the instance metadata service's publicKeys: not JSON (${shown(text)})`);
    return [];
  }
  if (!Array.isArray(list)) {
    log(`azure: ignoring the instance metadata service's publicKeys: not a list (${shown(text)})`);
    return [];
  }
  const keys: unknown[] = [];
  for (const entry of list) {
    const data = entry !== null && typeof entry === 'object' ? (entry as { keyData?: unknown }).keyData : undefined;
    if (typeof data === 'string') keys.push(data);
    else log(`azure: ignoring a publicKeys entry without keyData (${shown(JSON.stringify(entry))})`);
  }
  return cleanSshKeys(keys, log, 'the instance metadata service');
}

async function imdsKeys(env: ProviderEnv): Promise<string[]> {
  const text = await imds(env, IMDS_PUBLIC_KEYS, 'the public keys');
  return text === null ? [] : parseImdsPublicKeys(text, env.log);
}

// ---------------------------------------------------------------------------------------------

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const [ovf, addresses, size, keys] = await Promise.all([readOvfEnv(env), sharedConfigAddresses(env, 'azure'), vmSize(env), imdsKeys(env)]);
  const md = ovfMetadata(ovf, env);
  if (md.hostname === undefined) setHostname(md, cleanHostname(await imds(env, IMDS_NAME, 'the VM name'), env.log, 'the instance metadata service VM name'));
  md.sshKeys = cleanSshKeys([...md.sshKeys, ...keys], env.log, 'the metadata');
  const a = md.attributes;
  if (addresses.dynamic !== undefined) {
    a.COREOS_AZURE_IPV4_DYNAMIC = addresses.dynamic;
    a.COREOS_IPV4_PRIVATE = addresses.dynamic;
  }
  if (addresses.virtual !== undefined) {
    a.COREOS_AZURE_IPV4_VIRTUAL = addresses.virtual;
    a.COREOS_IPV4_PUBLIC = addresses.virtual;
  }
  if (size !== undefined) a.COREOS_AZURE_VMSIZE = size;
  return md;
}

export const provider: MetadataProvider = {
  id: 'azure',
  metadata,
  userdata: (env: ProviderEnv) => ovfUserdata(env, 'azure'),
  checkIn: (env: ProviderEnv) => reportReady(env, 'azure'),
};
