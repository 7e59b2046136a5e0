/**
 * The one place where everything acquired (temporary files and directories, loop devices, mounts,
 * child processes) registers its release. Releases run in reverse order on success, on failure and on
 * SIGINT/SIGTERM/SIGHUP.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

type Release = () => Promise<void> | void;

const stack: { name: string; release: Release }[] = [];
let handlersInstalled = false;
let exiting = false;

/** Registers a release; returns a function that runs it now and unregisters it. */
export function acquire(name: string, release: Release): () => Promise<void> {
  const item = { name, release };
  stack.push(item);
  return async () => {
    const i = stack.indexOf(item);
    if (i < 0) return;
    stack.splice(i, 1);
    // Tracked while it runs: a signal's releaseAll waits for it before the process exits.
    const running = Promise.resolve().then(release);
    inflight.add(running);
    try {
      await running;
    } finally {
      inflight.delete(running);
    }
  };
}

const inflight = new Set<Promise<unknown>>();

/**
 * Runs every registered release, newest first; errors are collected and reported, not thrown. Calls
 * run one after another (a signal's and a command's end can come at once): each returns when every
 * release registered before it has run.
 */
export function releaseAll(): Promise<string[]> {
  const run = releasing.then(releaseStack);
  releasing = run.then(() => undefined, () => undefined);
  return run;
}

let releasing: Promise<void> = Promise.resolve();

/** The signal that is ending the process (its handler is releasing everything), if one is. */
export function endingSignal(): NodeJS.Signals | undefined {
  return signalled;
}

let signalled: NodeJS.Signals | undefined;

async function releaseStack(): Promise<string[]> {
  const problems: string[] = [];
  while (stack.length) {
    const item = stack.pop()!;
    try {
      await item.release();
    } catch (err) {
      problems.push(`${item.name}: ${(err as Error).message}`);
    }
  }
  // Releases their owners started (and report themselves): done before anyone goes on to exit.
  await Promise.allSettled([...inflight]);
  return problems;
}

export function pendingReleases(): string[] {
  return stack.map((s) => s.name);
}

/** Installs signal handlers that release everything and exit with 128+signal. */
export function installSignalHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const codes: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
  for (const sig of Object.keys(codes) as NodeJS.Signals[]) {
    process.on(sig, () => {
      if (exiting) return;
      exiting = true;
      signalled = sig;
      process.stderr.write(`oem: interrupted (${sig}); cleaning up\n`);
      void releaseAll().then((problems) => {
        for (const p of problems) process.stderr.write(`oem: cleanup: ${p}\n`);
        process.exit(codes[sig]);
      });
    });
  }
}

/** A private temporary directory, removed on release. */
export async function tempDir(prefix: string, parent?: string): Promise<{ path: string; release: () => Promise<void> }> {
  const path = await mkdtemp(join(parent ?? process.env.OEM_TMPDIR ?? tmpdir(), `oem-${prefix}-`));
  const release = acquire(`temporary directory ${path}`, () => rm(path, { recursive: true, force: true }));
  return { path, release };
}

/**
 * Writes `path` whole or not at all: a temporary file beside it (registered, so Ctrl-C between the
 * write and the rename leaves nothing), then a rename over it.
 */
export async function writeFileAtomic(path: string, data: Buffer | string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const release = acquire(`temporary file ${tmp}`, () => rm(tmp, { force: true }));
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } finally {
    await release();
  }
}
