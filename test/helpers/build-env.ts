/**
 * What the `oem build` test files share: a work directory, the test release mirror served on
 * 127.0.0.1, a stand-in agent and an SSH key. `useBuildEnv()` registers the hooks that make and
 * remove them; the exported bindings are live (read them inside tests and hooks).
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, inject } from 'vitest';
import { startMirrorServer, type MirrorServer } from '../../scripts/lib/mirror-server.js';

export const fixtures = inject('fixtures');
export let work: string;
export let server: MirrorServer;
/** A real executable that stands in for the agent (test/agent.test.ts covers the real one). */
export let agent: string;
/** An ed25519 public key file. */
export let key: string;

let n = 0;
/** A number not used before in this file: for unique names under `work`. */
export function next(): number {
  return n++;
}

/** Providers for every generation (what --all-providers builds on CoreOS- and Flatcar-style images). */
export const PROVIDERS = [
  'aliyun', 'azure', 'azurestack', 'cloudsigma', 'cloudstack', 'digitalocean', 'ec2', 'exoscale', 'gce', 'hyperv', 'ibmcloud', 'ibmcloud-classic', 'ipxe', 'niftycloud',
  'openstack', 'packet', 'parallels', 'pxe', 'qemu', 'rackspace', 'rackspace-onmetal', 'upcloud', 'vagrant', 'virtualbox', 'vmware', 'vultr',
];
/** Providers for other CPU architectures (skipped on the x86-64 test images). */
export const OTHER_ARCH = ['powervs'];
/** Platforms that came with Flatcar's OEM extensions: only for Flatcar 3760 and later. */
export const SYSEXT_ONLY = ['akamai', 'hetzner', 'kubevirt', 'nutanix', 'oraclecloud', 'proxmoxve', 'scaleway', 'stackit'];

export function useBuildEnv(): void {
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'oem-build-test-'));
    server = await startMirrorServer(fixtures.mirror);
    agent = join(work, 'oem-agent');
    await copyFile('/bin/true', agent);
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'builder@example', '-f', join(work, 'k')]);
    key = join(work, 'k.pub');
  });
  afterAll(async () => {
    await server?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });
}

/** The release flags for the test mirror, with this file's cache. */
export function mirrorArgs(distro: 'flatcar' | 'coreos'): string[] {
  return ['--distro', distro, '--base-url', `${server.url}/${distro}/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, 'cache')];
}

/** Decompresses a .bz2 artifact with stock lbzip2 (parallel) into a new file under `work`. */
export async function raw(bz2: string): Promise<string> {
  const out = join(work, `raw-${next()}.bin`);
  // Sparse, as the build writes images: the test disks are mostly zeros, and writing them out whole
  // for every provider would cost the suite more than everything it checks.
  await execa('sh', ['-c', `lbzip2 -dc "${bz2}" | dd of="${out}" bs=64K conv=sparse status=none`]);
  return out;
}

export async function sha512(p: string): Promise<string> {
  const h = createHash('sha512');
  for await (const chunk of createReadStream(p, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}
