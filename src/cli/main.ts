// The `strata` command. Each subcommand lives in its own module and registers itself here.
import { Command } from 'commander';
import { VERSION } from '../version.ts';
import { registerDaemon } from './daemon.ts';
import { registerFacade } from './facade.ts';
import { registerImages } from './images.ts';
import { registerPull } from './pull.ts';
import { registerRootfs } from './rootfs.ts';
import { registerSpec } from './spec.ts';

export function buildProgram(): Command {
  const program = new Command('strata')
    .description('Container images built, composed and pulled on demand')
    .version(VERSION, '-v, --version', 'print the version');
  registerDaemon(program);
  registerFacade(program);
  registerSpec(program);
  registerPull(program);
  registerImages(program);
  registerRootfs(program);
  return program;
}

if (import.meta.main) {
  await buildProgram().parseAsync(process.argv);
}
