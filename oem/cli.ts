/**
 * oem-agent: the runtime provisioning agent embedded in provider images. One program with
 * subcommands; see `oem-agent --help`.
 */
import { parseArgs } from 'node:util';

export const AGENT_VERSION = '0.1.0';

const USAGE = `usage: oem-agent <command> [options]

commands:
  validate FILE                     check a provisioning config (exit 1 on any error)
  provision [--config FILE] [--root DIR] [--dry-run] [--force]
                                    apply the config once (first boot)
  version                           print the version
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'version':
    case '--version':
      process.stdout.write(`oem-agent ${AGENT_VERSION} (node ${process.versions.node} ${process.arch})\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default: {
      void parseArgs;
      process.stderr.write(`oem-agent: unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
      return 2;
    }
  }
  void rest;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`oem-agent: error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
