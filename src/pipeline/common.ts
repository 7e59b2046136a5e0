/**
 * What both CI engines' pipelines share: the release's arguments, the cache key, and the shell of
 * the three kinds of jobs (prepare, build a group, publish). The engines' files (github.ts,
 * gitlab.ts) only place these in their own structure.
 */
import type { Format } from '../artifacts/formats.js';
import type { Plan } from './plan.js';

export interface PipelineSpec {
  ci: 'github' | 'gitlab';
  /** The command that runs oem in the jobs (the OEM variable), e.g. `oem` or `node /abs/bin/run.js`. */
  oem: string;
  distro: string;
  channel: string;
  board: string;
  /** `current` or X.Y.Z; the prepare job resolves it once and every later job builds that version. */
  release: string;
  baseUrl?: string;
  imageName?: string;
  keys: string[];
  insecure: boolean;
  /** The cache directory in the jobs, relative to the checkout (CI caches keep paths in the project). */
  cacheDir: string;
  /** --format for every group; undefined: each provider's defaults. */
  formats?: Format[];
  plan: Plan;
  /** A fixed SOURCE_DATE_EPOCH; undefined: the prepare job takes the pipeline's, else the time it runs. */
  sourceDateEpoch?: string;
  /** GitHub: runs-on. */
  runsOn: string;
  /** GitLab: the jobs' image. */
  ciImage: string;
  /** The build flags every build job passes on (content and output options; paths relative to the checkout). */
  buildArgs: string[];
  /** What `npm install -g` installs oem from in every job (with the system packages it needs); undefined: the jobs' machines have it. */
  oemPackage?: string;
}

/** Single-quoted for POSIX sh when needed. */
export function shq(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The release flags every oem command of the pipeline gets (without --release). */
export function releaseArgs(s: PipelineSpec): string {
  const a = ['--distro', s.distro, '--channel', s.channel, '--board', s.board];
  if (s.baseUrl) a.push('--base-url', s.baseUrl);
  if (s.imageName) a.push('--image-name', s.imageName);
  for (const k of s.keys) a.push('--key', k);
  if (s.insecure) a.push('--insecure');
  return a.map(shq).join(' ');
}

/** The cache key's stem: distro and board; GitHub appends the resolved version, GitLab the --release. */
export function cacheKeyStem(s: PipelineSpec): string {
  const name = s.imageName ? `-${s.imageName.replace(/[^A-Za-z0-9._-]/g, '_')}` : '';
  return `oem-${s.distro}-${s.board}${name}-`;
}

/** Where each group's outputs go in its job, and where the publish job finds them. */
export const GROUPS_DIR = 'groups';
export const RELEASE_DIR = 'release';

/**
 * The prepare job: fetch (and verify) the release, resolve its version, decode the base into the
 * cache, drop other versions' downloads from the cache. Sets OEM_VERSION and SOURCE_DATE_EPOCH.
 */
export function prepareScript(s: PipelineSpec): string[] {
  const args = releaseArgs(s);
  return [
    [
      'set -eu',
      'export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(date +%s)}"',
      `$OEM fetch ${args} --release ${shq(s.release)} --json > oem-fetch.json`,
      `OEM_VERSION="$(node -p 'JSON.parse(require("fs").readFileSync("oem-fetch.json", "utf8")).version')"`,
      'echo "oem: release $OEM_VERSION fetched and verified; SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"',
    ].join('\n'),
    [
      `$OEM build ${args} --release "$OEM_VERSION" --prepare-only`,
      `# Other versions restored from an older cache are not needed again.`,
      `find "$OEM_CACHE_DIR/${s.distro}/${s.board}" -mindepth 1 -maxdepth 1 ! -name "$OEM_VERSION" -exec rm -rf {} + 2>/dev/null || true`,
    ].join('\n'),
  ];
}

/** A build job: the group's providers (OEM_PROVIDERS, space-separated ids) into GROUPS_DIR/OEM_GROUP. */
export function buildScript(s: PipelineSpec): string {
  const formats = (s.formats ?? []).map((f) => ` --format ${f}`).join('');
  return [
    'set -eu',
    'if [ -n "$(ls -A "$OEM_CACHE_DIR/bases" 2>/dev/null)" ]; then',
    '  echo "oem: the decoded base was restored from the CI cache"',
    'else',
    '  echo "oem: no cached base (cache miss): oem build fetches, verifies and decodes the release itself"',
    'fi',
    'set --',
    'for p in $OEM_PROVIDERS; do set -- "$@" --provider "$p"; done',
    `echo "oem: job $OEM_GROUP builds $OEM_PROVIDERS of $OEM_VERSION"`,
    `$OEM build ${releaseArgs(s)} --release "$OEM_VERSION" "$@"${formats}${s.buildArgs.map((a) => ` ${shq(a)}`).join('')} --output-dir "${GROUPS_DIR}/$OEM_GROUP"`,
  ].join('\n');
}

/**
 * The tools oem runs and their Debian packages: installed by a job that installs oem (--oem-package)
 * when any is missing, with sudo unless the job runs as root.
 */
export const JOB_TOOLS: Readonly<Record<string, string>> = {
  sgdisk: 'gdisk',
  debugfs: 'e2fsprogs',
  btrfs: 'btrfs-progs',
  mdir: 'mtools',
  'qemu-img': 'qemu-utils',
  bzip2: 'bzip2',
  lbzip2: 'lbzip2',
  xz: 'xz-utils',
  zstd: 'zstd',
  unsquashfs: 'squashfs-tools',
  'mkfs.erofs': 'erofs-utils',
};

/** Where a job installs oem (inside the job's directory, so no root is needed). */
export const TOOL_DIR = '.oem-tool';

/**
 * The install step of every job when --oem-package is given: the missing system packages, then oem
 * from the package with npm into TOOL_DIR. Leaves TOOL_DIR/bin to be put on PATH (each engine does
 * it its own way), then checks that $OEM runs.
 */
export function installScript(s: PipelineSpec): string | undefined {
  if (s.oemPackage === undefined) return undefined;
  const tools = Object.entries(JOB_TOOLS).map(([t, p]) => `${t}:${p}`).join(' ');
  return [
    'set -eu',
    'missing=',
    `for t in ${tools}; do command -v "\${t%%:*}" >/dev/null 2>&1 || missing="$missing \${t#*:}"; done`,
    'if [ -n "$missing" ]; then',
    '  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi',
    '  echo "oem: installing the Debian packages$missing"',
    '  $SUDO apt-get update -qq',
    '  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing',
    'fi',
    `npm install -g --no-fund --no-audit --prefix "$PWD/${TOOL_DIR}" ${shq(s.oemPackage)}`,
  ].join('\n');
}

/** The publish command: every group's directory into RELEASE_DIR, signed when "$@" holds --sign-key. */
export function publishCommand(s: PipelineSpec, groupDirs: string[]): string {
  return `$OEM publish ${groupDirs.map(shq).join(' ')} --output-dir ${RELEASE_DIR} "$@"`;
}

/** The top of every job file: what made it. */
export function header(s: PipelineSpec, argv: string[]): string {
  return [
    `Generated by: oem pipeline ${argv.map(shq).join(' ')}`,
    `${s.distro} ${s.channel} ${s.board} ${s.release}: ${s.plan.groups.length} build jobs; regenerate it instead of editing it.`,
  ]
    .map((l) => ` ${l}`)
    .join('\n');
}
