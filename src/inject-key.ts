/**
 * `oem inject-key`: the distributor notes' manual recipe (decompress, loop-mount ROOT, write the key,
 * unmount) as one command. Writes SSH public keys for a user on the
 * ROOT partition in the update-ssh-keys layout: the key set `~/.ssh/authorized_keys.d/oem` and the
 * merged `~/.ssh/authorized_keys` (directories 0700, files 0600, owned by the user). Other key sets are
 * kept; running it again replaces the `oem` set, so keys are never duplicated.
 */
import { OemError } from './shared/errors.js';
import { prepareWorkingImage, defaultOutputName } from './image/working.js';
import { keySetContent, mergeKeySets, readKeyFile, upgradeLegacyAuthorizedKeys, validKeySetName, type SshKey } from './shared/ssh-keys.js';
import { partitionTargets, resolveBackend, withSession, type BackendChoice } from './write/apply.js';
import { describePlan, normalizePlan, planSummary, type PlanEntry, type WritePlan } from './write/plan.js';
import type { PartitionSession } from './write/session.js';

export interface InjectKeyOptions {
  image: string;
  keyFiles: string[];
  user?: string;
  uid?: number;
  gid?: number;
  output?: string;
  inPlace?: boolean;
  backend?: BackendChoice;
  dryRun?: boolean;
  /** Name of the key set (default `oem`). */
  keySet?: string;
  log?: (line: string) => void;
}

export interface InjectKeyResult {
  image: string;
  output: string | null;
  dryRun: boolean;
  backend: string;
  method: string;
  user: string;
  uid: number;
  gid: number;
  keys: { type: string; fingerprint: string; comment?: string }[];
  keySets: string[];
  plan: Record<string, unknown[]>;
  planText: string;
}

const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

/** Builds the ROOT plan from the keys and the key sets already in the image. */
export async function keyPlan(
  session: Pick<PartitionSession, 'readFile' | 'listDir'>,
  keys: SshKey[],
  user: string,
  uid: number,
  gid: number,
  setName: string,
): Promise<{ entries: PlanEntry[]; sets: string[] }> {
  const home = `/home/${user}`;
  const setsDir = `${home}/.ssh/authorized_keys.d`;
  const existing: Record<string, string> = {};
  for (const name of (await session.listDir(setsDir)) ?? []) {
    if (!validKeySetName(name)) continue;
    const b = await session.readFile(`${setsDir}/${name}`);
    if (b) existing[name] = b.toString('utf8');
  }
  const ak = await session.readFile(`${home}/.ssh/authorized_keys`);
  const sets = upgradeLegacyAuthorizedKeys(ak ? ak.toString('utf8') : null, existing);
  sets[setName] = keySetContent(keys);
  const merged = mergeKeySets(sets);
  const own = { uid, gid };
  const entries: PlanEntry[] = [
    { kind: 'dir', path: '/home', mode: 0o755, uid: 0, gid: 0, ensureOnly: true },
    { kind: 'dir', path: home, mode: 0o755, ...own, ensureOnly: true },
    { kind: 'dir', path: `${home}/.ssh`, mode: 0o700, ...own },
    { kind: 'dir', path: setsDir, mode: 0o700, ...own },
    ...Object.entries(sets)
      .filter(([name]) => existing[name] === undefined || name === setName)
      .map(([name, content]) => ({ kind: 'file' as const, path: `${setsDir}/${name}`, content: Buffer.from(content), mode: 0o600, ...own })),
    { kind: 'file', path: `${home}/.ssh/authorized_keys`, content: Buffer.from(merged), mode: 0o600, ...own },
  ];
  return { entries, sets: Object.keys(sets).sort() };
}

export async function injectKey(opts: InjectKeyOptions): Promise<InjectKeyResult> {
  const log = opts.log ?? (() => {});
  const user = opts.user ?? 'core';
  if (!USER_RE.test(user)) throw new OemError(`invalid user name ${JSON.stringify(user)}`, { code: 'usage' });
  if (user !== 'core' && (opts.uid === undefined || opts.gid === undefined)) {
    throw new OemError(`--user ${user} needs --uid and --gid (only core is known: 1000:1000)`, { code: 'usage' });
  }
  const uid = opts.uid ?? 1000;
  const gid = opts.gid ?? 1000;
  const setName = opts.keySet ?? 'oem';
  if (!validKeySetName(setName)) throw new OemError(`invalid key set name ${JSON.stringify(setName)}`, { code: 'usage' });
  if (!opts.keyFiles.length) throw new OemError('no keys given: pass --key FILE (repeatable)', { code: 'usage' });

  // Keys are parsed and validated before anything is written.
  const keys: SshKey[] = [];
  for (const f of opts.keyFiles) keys.push(...(await readKeyFile(f)));
  const backend = resolveBackend(opts.backend ?? 'auto');

  const output = opts.inPlace && !opts.dryRun ? undefined : (opts.output ?? defaultOutputName(opts.image, '_key'));
  const work = await prepareWorkingImage(opts.image, { ...(output ? { output } : {}), inPlace: opts.dryRun ? false : (opts.inPlace ?? false), log });
  let plan: WritePlan;
  let sets: string[];
  try {
    const { root } = await partitionTargets(work.path, ['root']);
    // A dry run reads the image without a loop device or mount, and writes nothing.
    ({ sets, plan } = await withSession(
      root,
      opts.dryRun ? 'rootless' : backend,
      async (session) => {
        const kp = await keyPlan(session, keys, user, uid, gid, setName);
        const p = normalizePlan({ partitions: { root: kp.entries } });
        if (!opts.dryRun) await session.apply(p.partitions.root!);
        return { sets: kp.sets, plan: p };
      },
      { commit: !opts.dryRun },
    ));
    if (!opts.dryRun) {
      await work.commit();
      log(`wrote ${keys.length} key(s) for ${user} to ${work.finalPath}`);
    }
  } finally {
    await work.discard();
  }
  return {
    image: opts.image,
    output: opts.dryRun ? null : work.finalPath,
    dryRun: opts.dryRun ?? false,
    backend: opts.dryRun ? 'none (dry run)' : backend,
    method: work.method,
    user,
    uid,
    gid,
    keys: keys.map((k) => ({ type: k.type, fingerprint: k.fingerprint, ...(k.comment ? { comment: k.comment } : {}) })),
    keySets: sets,
    plan: planSummary(plan),
    planText: describePlan(plan),
  };
}
