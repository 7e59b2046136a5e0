/**
 * oclif's command_not_found hook: `oem help [COMMAND]` shows the help (as `oem [COMMAND] --help`
 * does), and an unknown command ends as every usage error does: one line, a hint, exit 2.
 */
import { Help, type Hook } from '@oclif/core';

const hook: Hook<'command_not_found'> = async function (opts) {
  const words = opts.id.split(':');
  if (words[0] === 'help') {
    await new Help(opts.config).showHelp([...words.slice(1), ...(opts.argv ?? [])]);
    return;
  }
  const known = opts.config.commandIDs.map((c) => c.replaceAll(':', ' ')).sort();
  process.stderr.write(`oem: error: unknown command "${words.join(' ')}"\nhint: the commands are ${known.join(', ')}; see 'oem --help'\n`);
  this.exit(2);
};

export default hook;
