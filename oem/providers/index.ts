/**
 * The registry of metadata providers: oem id -> module (loaded on demand, so a run loads only its
 * own platform's code), finding the platform, and the environment with its real defaults.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OemError } from '../../src/shared/errors.js';
import { AGENT_PLATFORMS, type AgentPlatform } from '../../src/shared/platforms.js';
import type { MetadataProvider, ProviderEnv } from './types.js';

type ProviderModule = { provider: MetadataProvider };

async function load(id: string, mod: Promise<ProviderModule>): Promise<MetadataProvider> {
  const m = await mod;
  const p = m.provider;
  if (!p || typeof p.metadata !== 'function' || typeof p.userdata !== 'function') {
    throw new OemError(`internal: the provider module for ${id} does not export a provider`);
  }
  return p;
}

/** oem id -> the provider that serves it (exactly the platforms of src/shared/platforms.ts). */
export const PROVIDERS: Record<AgentPlatform, () => Promise<MetadataProvider>> = {
  akamai: () => load('akamai', import('./akamai.js')),
  aliyun: () => load('aliyun', import('./aliyun.js')),
  azure: () => load('azure', import('./azure.js')),
  azurestack: () => load('azurestack', import('./azurestack.js')),
  cloudsigma: () => load('cloudsigma', import('./cloudsigma.js')),
  cloudstack: () => load('cloudstack', import('./cloudstack.js')),
  digitalocean: () => load('digitalocean', import('./digitalocean.js')),
  ec2: () => load('ec2', import('./ec2.js')),
  exoscale: () => load('exoscale', import('./exoscale.js')),
  gce: () => load('gce', import('./gce.js')),
  hetzner: () => load('hetzner', import('./hetzner.js')),
  hyperv: () => load('hyperv', import('./hyperv.js')),
  ibmcloud: () => load('ibmcloud', import('./ibmcloud.js')),
  'ibmcloud-classic': () => load('ibmcloud-classic', import('./ibmcloud-classic.js')),
  ipxe: () => load('ipxe', import('./pxe.js')),
  kubevirt: () => load('kubevirt', import('./kubevirt.js')),
  niftycloud: () => load('niftycloud', import('./niftycloud.js')),
  openstack: () => load('openstack', import('./openstack.js')),
  oraclecloud: () => load('oraclecloud', import('./oraclecloud.js')),
  packet: () => load('packet', import('./packet.js')),
  powervs: () => load('powervs', import('./powervs.js')),
  proxmoxve: () => load('proxmoxve', import('./proxmoxve.js')),
  pxe: () => load('pxe', import('./pxe.js')),
  rackspace: () => load('rackspace', import('./rackspace.js')),
  'rackspace-onmetal': () => load('rackspace-onmetal', import('./rackspace-onmetal.js')),
  scaleway: () => load('scaleway', import('./scaleway.js')),
  upcloud: () => load('upcloud', import('./upcloud.js')),
  vagrant: () => load('vagrant', import('./vagrant.js')),
  vmware: () => load('vmware', import('./vmware.js')),
  vultr: () => load('vultr', import('./vultr.js')),
};

export const PROVIDER_IDS: readonly string[] = AGENT_PLATFORMS;

export const DEFAULT_HTTP: ProviderEnv['http'] = { tries: 10, backoffMs: 1000, maxBackoffMs: 5000, timeoutMs: 10_000 };

export type EnvOverrides = Partial<Omit<ProviderEnv, 'http'>> & { http?: Partial<ProviderEnv['http']> };

/** The environment with the real defaults (see ProviderEnv), changed by `overrides`. */
export function defaultEnv(overrides: EnvOverrides = {}): ProviderEnv {
  const { http, ...rest } = overrides;
  const env: ProviderEnv = {
    root: '/',
    metadataUrl: 'http://169.254.169.254',
    configDrive: '/media/configdrive',
    serialDevice: '/dev/ttyS1',
    vmtoolsd: ['vmtoolsd'],
    azureDvd: '/media/azure',
    http: { ...DEFAULT_HTTP },
    log: (line: string) => void process.stdout.write(`oem-agent: ${line}\n`),
  };
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) (env as unknown as Record<string, unknown>)[k] = v;
  for (const [k, v] of Object.entries(http ?? {})) if (v !== undefined) (env.http as Record<string, number>)[k] = v;
  return env;
}

/**
 * The oem id in a kernel command line: the last `flatcar.oem.id=` or `coreos.oem.id=` (the kernel's
 * rule: a later parameter wins); undefined when there is none.
 */
export function oemIdFromCmdline(cmdline: string): string | undefined {
  let id: string | undefined;
  // Parameters are separated by whitespace; a value may be double-quoted.
  const re = /(?:^|\s)(flatcar|coreos)\.oem\.id=("([^"]*)"|\S*)/g;
  for (const m of cmdline.matchAll(re)) id = m[3] ?? m[2];
  return id;
}

/** The kernel command line: env.cmdline, else <root>/proc/cmdline ('' when unreadable). */
async function readCmdline(env: Pick<ProviderEnv, 'root' | 'cmdline'>): Promise<string> {
  if (env.cmdline !== undefined) return env.cmdline;
  try {
    return await readFile(join(env.root, 'proc', 'cmdline'), 'utf8');
  } catch {
    return '';
  }
}

/** The oem id to use: `explicit`, else the kernel command line's. Throws for none and unknown ones. */
export async function detectProviderId(explicit: string | undefined, env: Pick<ProviderEnv, 'root' | 'cmdline'>): Promise<string> {
  let id = explicit;
  let from = '--provider';
  if (id === undefined || id === '') {
    const cmdline = await readCmdline(env);
    id = oemIdFromCmdline(cmdline);
    from = env.cmdline !== undefined ? 'the given kernel command line' : `${join(env.root, 'proc', 'cmdline')}`;
    if (id === undefined || id === '') {
      throw new OemError(`no provider: give --provider, or boot with flatcar.oem.id= (or coreos.oem.id=) on the kernel command line (read ${from})`, {
        code: 'usage',
      });
    }
  }
  if (!Object.hasOwn(PROVIDERS, id)) {
    throw new OemError(`unknown provider ${JSON.stringify(id)} (from ${from}); known: ${PROVIDER_IDS.join(', ')}`, { code: 'usage' });
  }
  return id;
}

/** The provider for `explicit`, else for the kernel command line's oem id. */
export async function detectProvider(explicit: string | undefined, env: Pick<ProviderEnv, 'root' | 'cmdline'>): Promise<MetadataProvider> {
  const id = await detectProviderId(explicit, env);
  return PROVIDERS[id as AgentPlatform]();
}
