/** How the CLI is bundled (scripts/bundle-cli.ts), shared with tests that run a bundled module on its own. */
import type { BuildOptions } from 'esbuild';

export const BUNDLE_OPTIONS = {
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // CommonJS dependencies inside an ES module bundle still call require() for Node's own modules.
  banner: { js: "import { createRequire as __oemCreateRequire } from 'node:module'; const require = __oemCreateRequire(import.meta.url);" },
  logLevel: 'warning',
} satisfies BuildOptions;
