/**
 * The entry point of oem-agent (what scripts/build-agent.ts bundles): runs the CLI (oem/cli.ts) with
 * the process's arguments and exits with its code.
 */
import { run } from './cli.js';

run(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`oem-agent: error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
