/**
 * The GitHub Actions workflow of a release's fan-out: prepare (fetch, verify, decode into the cache,
 * saved with actions/cache under a key of distro, board and the resolved version), a build matrix of
 * the plan's groups (each restoring the cache and uploading its outputs with actions/upload-artifact),
 * and publish (needs every build; downloads their artifacts, signs with the OEM_SIGN_KEY secret
 * written to a file in the job).
 */
import { Document } from 'yaml';
import { buildScript, cacheKeyStem, GROUPS_DIR, header, installScript, prepareScript, publishCommand, RELEASE_DIR, TOOL_DIR, type PipelineSpec } from './common.js';

export const ARTIFACT_PREFIX = 'oem-group-';

export function githubWorkflow(s: PipelineSpec, argv: string[]): string {
  const stem = cacheKeyStem(s);
  const install = installScript(s);
  // Every job starts from a checkout (and, with --oem-package, installs oem and its packages).
  const checkout = [
    { uses: 'actions/checkout@v4' },
    ...(install === undefined
      ? []
      : [
          { uses: 'actions/setup-node@v4', with: { 'node-version': '20' } },
          { name: 'Install oem', run: `${install}\necho "$PWD/${TOOL_DIR}/bin" >> "$GITHUB_PATH"` },
        ]),
  ];
  const groupDirs = s.plan.groups.map((g) => `${GROUPS_DIR}/${ARTIFACT_PREFIX}${g.index}`);
  const prepare = prepareScript(s);
  const wf = {
    name: `oem release: ${s.distro} ${s.channel} ${s.board} ${s.release}`,
    on: { workflow_dispatch: {} },
    permissions: { contents: 'read' },
    concurrency: { group: `oem-${s.distro}-${s.channel}-${s.board}-${s.release}`, 'cancel-in-progress': false },
    env: {
      OEM: s.oem,
      OEM_CACHE_DIR: s.cacheDir,
      ...(s.sourceDateEpoch !== undefined ? { SOURCE_DATE_EPOCH: s.sourceDateEpoch } : {}),
    },
    jobs: {
      prepare: {
        name: 'prepare: fetch, verify and decode the base',
        'runs-on': s.runsOn,
        outputs: {
          version: '${{ steps.fetch.outputs.version }}',
          'source-date-epoch': '${{ steps.fetch.outputs.source-date-epoch }}',
          'cache-key': '${{ steps.fetch.outputs.cache-key }}',
        },
        steps: [
          ...checkout,
          {
            name: 'Restore the oem cache',
            id: 'restore',
            uses: 'actions/cache/restore@v4',
            with: { path: s.cacheDir, key: `${stem}${s.release}`, 'restore-keys': stem },
          },
          {
            name: 'Fetch and verify the release',
            id: 'fetch',
            run: [
              prepare[0],
              `echo "version=$OEM_VERSION" >> "$GITHUB_OUTPUT"`,
              `echo "source-date-epoch=$SOURCE_DATE_EPOCH" >> "$GITHUB_OUTPUT"`,
              `echo "cache-key=${stem}$OEM_VERSION" >> "$GITHUB_OUTPUT"`,
              `echo "OEM_VERSION=$OEM_VERSION" >> "$GITHUB_ENV"`,
              `echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" >> "$GITHUB_ENV"`,
            ].join('\n'),
          },
          { name: 'Decode the base into the cache (oem build --prepare-only)', run: prepare[1] },
          {
            name: 'Save the oem cache',
            if: 'steps.restore.outputs.cache-matched-key != steps.fetch.outputs.cache-key',
            uses: 'actions/cache/save@v4',
            with: { path: s.cacheDir, key: '${{ steps.fetch.outputs.cache-key }}' },
          },
        ],
      },
      build: {
        name: 'build ${{ matrix.group }}: ${{ matrix.providers }}',
        needs: 'prepare',
        'runs-on': s.runsOn,
        strategy: {
          'fail-fast': true,
          matrix: { include: s.plan.groups.map((g) => ({ group: g.index, providers: g.providers.join(' ') })) },
        },
        env: {
          OEM_VERSION: '${{ needs.prepare.outputs.version }}',
          SOURCE_DATE_EPOCH: '${{ needs.prepare.outputs.source-date-epoch }}',
          OEM_GROUP: '${{ matrix.group }}',
          OEM_PROVIDERS: '${{ matrix.providers }}',
        },
        steps: [
          ...checkout,
          {
            name: 'Restore the decoded base',
            uses: 'actions/cache/restore@v4',
            with: { path: s.cacheDir, key: '${{ needs.prepare.outputs.cache-key }}' },
          },
          { name: 'Build the group', run: buildScript(s) },
          {
            name: 'Upload the group',
            uses: 'actions/upload-artifact@v4',
            with: { name: `${ARTIFACT_PREFIX}\${{ matrix.group }}`, path: `${GROUPS_DIR}/\${{ matrix.group }}`, 'if-no-files-found': 'error' },
          },
        ],
      },
      publish: {
        name: 'publish',
        needs: ['prepare', 'build'],
        'runs-on': s.runsOn,
        env: { OEM_VERSION: '${{ needs.prepare.outputs.version }}', SOURCE_DATE_EPOCH: '${{ needs.prepare.outputs.source-date-epoch }}' },
        steps: [
          ...checkout,
          {
            name: 'Download every group',
            uses: 'actions/download-artifact@v4',
            with: { pattern: `${ARTIFACT_PREFIX}*`, path: GROUPS_DIR },
          },
          {
            name: 'Publish (signed with the OEM_SIGN_KEY secret)',
            env: { OEM_SIGN_KEY: '${{ secrets.OEM_SIGN_KEY }}', OEM_SIGN_PASSPHRASE: '${{ secrets.OEM_SIGN_PASSPHRASE }}' },
            run: [
              'set -eu',
              'set --',
              'if [ -n "${OEM_SIGN_KEY:-}" ]; then',
              '  OEM_SIGN_KEY_FILE="$RUNNER_TEMP/oem-sign-key.asc"',
              `  (umask 077 && printf '%s\\n' "$OEM_SIGN_KEY" > "$OEM_SIGN_KEY_FILE")`,
              '  set -- --sign-key "$OEM_SIGN_KEY_FILE"',
              '  if [ -n "${OEM_SIGN_PASSPHRASE:-}" ]; then',
              `    (umask 077 && printf '%s' "$OEM_SIGN_PASSPHRASE" > "$RUNNER_TEMP/oem-sign-passphrase")`,
              '    set -- "$@" --sign-passphrase-file "$RUNNER_TEMP/oem-sign-passphrase"',
              '  fi',
              'else',
              '  echo "oem: WARNING: no OEM_SIGN_KEY secret: the release is published unsigned"',
              'fi',
              publishCommand(s, groupDirs),
              'rm -f "$RUNNER_TEMP/oem-sign-key.asc" "$RUNNER_TEMP/oem-sign-passphrase"',
            ].join('\n'),
          },
          {
            name: 'Upload the release',
            uses: 'actions/upload-artifact@v4',
            with: { name: 'oem-release', path: RELEASE_DIR, 'if-no-files-found': 'error' },
          },
        ],
      },
    },
  };
  const doc = new Document(wf, { aliasDuplicateObjects: false });
  doc.commentBefore = header(s, argv);
  return doc.toString({ lineWidth: 0 });
}
