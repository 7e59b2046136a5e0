/**
 * The GitLab CI pipeline of a release's fan-out: prepare (fetch, verify, decode into the cache; the
 * resolved version and SOURCE_DATE_EPOCH handed on as a dotenv report), a `parallel: matrix` build
 * job of the plan's groups (pulling the cache, each group's outputs in `artifacts: paths`), and publish
 * (needs every build job; signs with the CI/CD file variable OEM_SIGN_KEY_FILE).
 *
 * GitLab evaluates `cache: key` before any job runs, so the key is the release as asked: exact for a
 * pinned --release X.Y.Z, the channel's for `current` (whatever version was last cached; oem fetch
 * re-checks it and downloads a newer one, and the prepare job drops older versions).
 */
import { Document } from 'yaml';
import { buildScript, cacheKeyStem, GROUPS_DIR, header, installScript, prepareScript, publishCommand, RELEASE_DIR, TOOL_DIR, type PipelineSpec } from './common.js';

export function gitlabPipeline(s: PipelineSpec, argv: string[]): string {
  const key = `${cacheKeyStem(s)}${s.release === 'current' ? `${s.channel}-current` : s.release}`;
  const cache = (policy: 'pull' | 'pull-push') => ({ key, paths: [`${s.cacheDir}/`], policy });
  const groupDirs = s.plan.groups.map((g) => `${GROUPS_DIR}/${g.index}`);
  const prepare = prepareScript(s);
  const install = installScript(s);
  const ci = {
    stages: ['prepare', 'build', 'publish'],
    variables: {
      OEM: s.oem,
      OEM_CACHE_DIR: s.cacheDir,
      ...(s.sourceDateEpoch !== undefined ? { SOURCE_DATE_EPOCH: s.sourceDateEpoch } : {}),
    },
    default: {
      image: s.ciImage,
      // With --oem-package: oem and its packages, installed in every job (before_script shares the job's shell).
      ...(install === undefined ? {} : { before_script: [install, `export PATH="$PWD/${TOOL_DIR}/bin:$PATH"`] }),
    },
    prepare: {
      stage: 'prepare',
      cache: cache('pull-push'),
      script: [
        prepare[0],
        prepare[1],
        'printf "OEM_VERSION=%s\\nSOURCE_DATE_EPOCH=%s\\n" "$OEM_VERSION" "$SOURCE_DATE_EPOCH" > oem.env',
      ],
      artifacts: { reports: { dotenv: 'oem.env' } },
    },
    build: {
      stage: 'build',
      needs: [{ job: 'prepare', artifacts: true }],
      parallel: { matrix: s.plan.groups.map((g) => ({ OEM_GROUP: String(g.index), OEM_PROVIDERS: g.providers.join(' ') })) },
      cache: cache('pull'),
      script: [buildScript(s)],
      artifacts: { paths: [`${GROUPS_DIR}/`], expire_in: '1 week' },
    },
    publish: {
      stage: 'publish',
      needs: [
        { job: 'prepare', artifacts: true },
        { job: 'build', artifacts: true },
      ],
      script: [
        [
          'set -eu',
          'set --',
          'if [ -n "${OEM_SIGN_KEY_FILE:-}" ]; then',
          '  set -- --sign-key "$OEM_SIGN_KEY_FILE"',
          '  if [ -n "${OEM_SIGN_PASSPHRASE_FILE:-}" ]; then set -- "$@" --sign-passphrase-file "$OEM_SIGN_PASSPHRASE_FILE"; fi',
          'else',
          '  echo "oem: WARNING: no OEM_SIGN_KEY_FILE file variable: the release is published unsigned"',
          'fi',
          publishCommand(s, groupDirs),
        ].join('\n'),
      ],
      artifacts: { paths: [`${RELEASE_DIR}/`] },
    },
  };
  const doc = new Document(ci, { aliasDuplicateObjects: false });
  doc.commentBefore = header(s, argv);
  return doc.toString({ lineWidth: 0 });
}
