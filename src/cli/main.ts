// The `strata` command. Each subcommand lives in its own module and registers itself here. Only the
// module of the command being run is loaded (start-up time counts for `strata pull`); help loads them all.
import { enableCompileCache } from 'node:module';
import { Command, Help, type Option } from 'commander';
import { VERSION } from '../version.ts';

type Register = (program: Command) => void;

/**
 * Help that leaves out an empty list as a repeatable flag's default: `(default: [])` says nothing the
 * description's "(repeatable)" does not, and the command's own default, when it has one, is in the text.
 */
const HELP = {
  optionDescription(this: Help, option: Option): string {
    const empty = Array.isArray(option.defaultValue) && option.defaultValue.length === 0;
    // The option seen through an object that hides its default: its methods still answer for it.
    const shown: Option = empty
      ? Object.assign(Object.create(option) as Option, { defaultValue: undefined })
      : option;
    return Help.prototype.optionDescription.call(this, shown);
  },
};

const COMMANDS: Record<string, () => Promise<Register>> = {
  up: async () => (await import('./up.ts')).registerUp,
  daemon: async () => (await import('./daemon.ts')).registerDaemon,
  facade: async () => (await import('./facade.ts')).registerFacade,
  builder: async () => (await import('./builder.ts')).registerBuilder,
  build: async () => (await import('./build.ts')).registerBuild,
  spec: async () => (await import('./spec.ts')).registerSpec,
  pull: async () => (await import('./pull.ts')).registerPull,
  images: async () => (await import('./images.ts')).registerImages,
  rootfs: async () => (await import('./rootfs.ts')).registerRootfs,
};

/** The program with the commands `argv` needs: the one it names, none to print the version, else all. */
export async function buildProgram(argv: readonly string[] = process.argv): Promise<Command> {
  // Set before the commands are added: each takes its parent's help settings when it is made.
  const program = new Command('strata')
    .configureHelp(HELP)
    .description('Container images built, composed and pulled on demand')
    .version(VERSION, '-v, --version', 'print the version');
  const named = argv[2] === 'image' ? 'images' : argv[2]; // the alias commander knows for `images`
  let wanted = Object.keys(COMMANDS);
  if (named !== undefined && Object.hasOwn(COMMANDS, named)) wanted = [named];
  else if (named === '-v' || named === '--version') wanted = [];
  for (const name of wanted) (await COMMANDS[name]!())(program);
  return program;
}

/**
 * A reader that stops early (`strata images ls | head -1`) closes the pipe. Node ignores SIGPIPE, so the
 * next write fails with EPIPE, which would surface as an unhandled error and its stack trace: end at once
 * and quietly instead, with the status of a command SIGPIPE ended (128 + 13), as Unix tools do.
 */
function endQuietlyOnBrokenPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(141);
      throw err;
    });
  }
}

if (import.meta.main) {
  // V8's code cache, and Node's type-stripped sources, kept on disk between runs (NODE_COMPILE_CACHE
  // picks the directory, NODE_DISABLE_COMPILE_CACHE turns it off): start-up CPU of `strata pull` ~0.36 s
  // -> ~0.21 s. Only the command modules, loaded below, benefit.
  enableCompileCache();
  endQuietlyOnBrokenPipe();
  await (await buildProgram()).parseAsync(process.argv);
}
