/**
 * Oracle Cloud Infrastructure (oraclecloud): the instance metadata service v2 under env.metadataUrl
 * (http://169.254.169.254). Every request carries `Authorization: Bearer Oracle`: the v2 endpoints
 * refuse requests without it (401).
 *
 *   /opc/v2/instance/   { "availabilityDomain": "EMIr:PHX-AD-1", "faultDomain": "FAULT-DOMAIN-3",
 *                         "compartmentId": "ocid1.tenancy.oc1..x", "hostname": "my-hostname",
 *                         "id": "ocid1.instance.oc1.phx.x", "shape": "VM.Standard.E3.Flex",
 *                         "canonicalRegionName": "us-phoenix-1",
 *                         "metadata": { "ssh_authorized_keys": "ssh-rsa ...\nssh-ed25519 ...",
 *                                       "user_data": "<base64>" }, ... }
 *   /opc/v2/vnics/      [{ "vnicId": "...", "privateIp": "10.0.0.2", "macAddr": "...", ... }]
 *
 * Attributes, as Afterburn names them: COREOS_ORACLECLOUD_{AVAILABILITY_DOMAIN, COMPARTMENT_ID,
 * FAULT_DOMAIN, HOSTNAME, INSTANCE_ID, INSTANCE_SHAPE, REGION_ID (canonicalRegionName)}; and
 * COREOS_HOSTNAME, COREOS_IPV4_PRIVATE (the first VNIC's privateIp: the instance document has no
 * address; the VNIC list is read as a secondary source, its failure is logged and skipped).
 * The SSH keys are the lines of metadata.ssh_authorized_keys; the userdata is metadata.user_data,
 * base64-decoded. A 404 for the instance document means no metadata (logged); other failures are
 * errors after env.http's retries.
 */
import { OemError } from '../../src/shared/errors.js';
import { httpGet, joinUrl, showUrl } from './http.js';
import { decodeBase64, userdataOrNull } from './local-io.js';
import { isObject, type Json, plainValue } from './afterburn-common.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanSshKeys, shown } from './values.js';

const AUTH = { Authorization: 'Bearer Oracle' };

async function fetchJson(env: ProviderEnv, path: string): Promise<unknown> {
  const url = joinUrl(env.metadataUrl, path);
  const b = await httpGet(url, env, { headers: AUTH, optional: true });
  if (b === null) return null;
  try {
    return JSON.parse(b.toString('utf8')) as unknown;
  } catch (err) {
    throw new OemError(`oraclecloud: ${showUrl(url)} is not valid JSON (${b.length} bytes): ${(err as Error).message}`, { code: 'network' });
  }
}

/** /opc/v2/instance/, or null (logged) when the service has none. */
async function instance(env: ProviderEnv): Promise<Json | null> {
  const path = '/opc/v2/instance/';
  const doc = await fetchJson(env, path);
  if (doc === null) {
    env.log(`oraclecloud: the metadata service has no ${path}`);
    return null;
  }
  if (!isObject(doc)) throw new OemError(`oraclecloud: ${showUrl(joinUrl(env.metadataUrl, path))} is not a JSON object`, { code: 'network' });
  return doc;
}

/** The first VNIC's private address; failures are logged and taken as absent. */
async function privateAddress(env: ProviderEnv): Promise<string | undefined> {
  let vnics: unknown;
  try {
    vnics = await fetchJson(env, '/opc/v2/vnics/');
  } catch (err) {
    if (!(err instanceof OemError)) throw err;
    env.log(`oraclecloud: ${err.message}; going on without the VNIC addresses`);
    return undefined;
  }
  if (vnics === null) return undefined;
  if (!Array.isArray(vnics)) {
    env.log('oraclecloud: ignoring /opc/v2/vnics/: not a list');
    return undefined;
  }
  const first: unknown = vnics[0];
  return isObject(first) ? cleanIp(first.privateIp, env.log, 'oraclecloud: the privateIp of the first VNIC', 4) : undefined;
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const doc = await instance(env);
  if (doc === null) return md;
  const a = md.attributes;
  const fields: [string, string][] = [
    ['AVAILABILITY_DOMAIN', 'availabilityDomain'],
    ['COMPARTMENT_ID', 'compartmentId'],
    ['FAULT_DOMAIN', 'faultDomain'],
    ['HOSTNAME', 'hostname'],
    ['INSTANCE_ID', 'id'],
    ['INSTANCE_SHAPE', 'shape'],
    ['REGION_ID', 'canonicalRegionName'],
  ];
  for (const [key, field] of fields) {
    const v = plainValue(doc[field], `oraclecloud: ${field}`, env.log);
    if (v !== undefined) a[`COREOS_ORACLECLOUD_${key}`] = v;
  }
  if (a.COREOS_ORACLECLOUD_HOSTNAME !== undefined) {
    const hostname = cleanHostname(a.COREOS_ORACLECLOUD_HOSTNAME, env.log, 'oraclecloud: the hostname');
    if (hostname !== undefined) md.hostname = a.COREOS_HOSTNAME = hostname;
  }
  const priv = await privateAddress(env);
  if (priv !== undefined) a.COREOS_IPV4_PRIVATE = priv;

  const meta = doc.metadata;
  if (meta !== undefined && meta !== null && !isObject(meta)) env.log('oraclecloud: ignoring "metadata": not an object');
  const keys = isObject(meta) ? meta.ssh_authorized_keys : undefined;
  if (typeof keys === 'string') md.sshKeys = cleanSshKeys([keys], env.log, 'the Oracle Cloud metadata');
  else if (keys !== undefined && keys !== null) env.log(`oraclecloud: ignoring ssh_authorized_keys: not a string (${shown(keys)})`);
  return md;
}

/** metadata.user_data, base64-decoded (null: none). Not valid base64 is an error. */
async function userdata(env: ProviderEnv): Promise<Userdata> {
  const doc = await instance(env);
  const meta = doc?.metadata;
  const u = isObject(meta) ? meta.user_data : undefined;
  if (u === undefined || u === null || u === '') return null;
  if (typeof u !== 'string') throw new OemError('oraclecloud: metadata.user_data is not a string');
  return userdataOrNull(decodeBase64(u, 'oraclecloud: metadata.user_data'), 'oraclecloud: metadata.user_data');
}

export const provider: MetadataProvider = { id: 'oraclecloud', metadata, userdata };
