import { Args, Flags } from '@oclif/core';
import { stat } from 'node:fs/promises';
import { OemCommand } from '../base-command.js';
import { OemError } from '../shared/errors.js';
import { readAndValidateConfig } from '../shared/config/validate.js';
import { formatProblem, type Problem } from '../shared/config/types.js';

export default class Validate extends OemCommand {
  static override summary = 'Check a provisioning config (the one the agent applies on first boot).';
  static override description =
    'Reports every problem at once, each with its path in the document and its line and column. The same validator as ' +
    '`oem-agent validate` and `oem build --config`. Exit 1 on any error in it, 2 if it is missing; warnings (unknown keys) alone exit 0.';
  static override examples = ['<%= config.bin %> validate config.yml', '<%= config.bin %> validate config.yml --json'];
  static override enableJsonFlag = true;
  static override args = { file: Args.string({ description: 'config file (YAML or JSON)', required: true }) };
  static override flags = {
    'base-group': Flags.string({ description: 'a group the base image has, besides Container Linux\'s own (repeatable)', multiple: true }),
  };

  async run(): Promise<{ file: string; valid: boolean; errors: number; warnings: number; problems: Problem[] }> {
    const { args, flags } = await this.parse(Validate);
    // A missing input file is a usage error (exit 2), as for every command; problems in it exit 1.
    if (!(await stat(args.file).catch(() => null))) throw new OemError(`no such config file: ${args.file}`, { code: 'usage', hint: 'give the path of a provisioning config (YAML or JSON); see oem validate --help' });
    const r = await readAndValidateConfig(args.file, flags['base-group'] ? { extraGroups: flags['base-group'] } : {});
    const errors = r.problems.filter((p) => p.severity === 'error').length;
    const warnings = r.problems.length - errors;
    const result = { file: args.file, valid: errors === 0, errors, warnings, problems: r.problems };
    if (this.jsonEnabled()) {
      if (errors) {
        process.stdout.write(JSON.stringify(result, null, 2) + '\n');
        this.exit(1);
      }
      return result;
    }
    for (const p of r.problems) process.stderr.write(`${formatProblem(p)}\n`);
    if (errors) throw new OemError(`${args.file}: ${errors} error(s), ${warnings} warning(s)`, { code: 'failure' });
    this.log(`${args.file}: valid${warnings ? ` (${warnings} warning(s))` : ''}`);
    return result;
  }
}
