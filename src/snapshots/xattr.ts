// Extended attributes (security.capability, ACLs, user.*) of layer entries and snapshot trees. Node has
// no xattr API, so the attr package's setfattr/getfattr do the work: one process per attribute set while
// applying a layer (xattrs are rare in layers), and one dump plus one restore for a whole tree copy.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const TIMEOUT_MS = 30_000;
const MAX_DUMP_BYTES = 256 * 1024 * 1024;

/** Sets one attribute on `path` itself (a symlink is not followed). Rejects when the kernel refuses. */
export async function setXattr(path: string, name: string, value: Uint8Array): Promise<void> {
  const hex = `0x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;
  await run('setfattr', ['-h', '-n', name, '-v', hex, '--', path], { timeout: TIMEOUT_MS });
}

/** Every attribute of `path` itself, by name. */
export async function getXattrs(path: string): Promise<Record<string, Buffer>> {
  const { stdout } = await run(
    'getfattr',
    ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', path],
    {
      timeout: TIMEOUT_MS,
      maxBuffer: MAX_DUMP_BYTES,
    },
  );
  const attrs: Record<string, Buffer> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([^#=][^=]*)=0x([0-9a-f]*)$/.exec(line);
    if (m) attrs[m[1]!] = Buffer.from(m[2]!, 'hex');
  }
  return attrs;
}

/**
 * Gives every path under `dst` the attributes of the same path under `src` (trees of identical shape, as
 * after a copy). Attributes the kernel refuses (e.g. security.* without privileges) are left out.
 */
export async function copyTreeXattrs(src: string, dst: string): Promise<void> {
  const { stdout } = await run(
    'getfattr',
    ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', src],
    {
      timeout: TIMEOUT_MS,
      maxBuffer: MAX_DUMP_BYTES,
    },
  );
  if (stdout.trim() === '') return;
  // getfattr names each file on a `# file: PATH` line (PATH octal-escaped); swap the tree's prefix.
  const prefix = `# file: ${escapeName(src)}`;
  const dump = stdout
    .split('\n')
    .map((line) =>
      line.startsWith(prefix) ? `# file: ${escapeName(dst)}${line.slice(prefix.length)}` : line,
    )
    .join('\n');
  await new Promise<void>((resolve, reject) => {
    const child = execFile('setfattr', ['-h', '--restore=-'], { timeout: TIMEOUT_MS }, (err) =>
      err ? reject(err) : resolve(),
    );
    child.stdin?.end(dump);
  });
}

/** getfattr's quoting of a path: backslash and control characters as octal escapes. */
function escapeName(path: string): string {
  return path.replace(/[\\\x00-\x1f\x7f]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}
