// The applier's reading of tar framing, checked against what containerd's reader (Go's archive/tar)
// makes of the same bytes: a layer must unpack to the same tree here as there.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import tar from 'tar-stream';
import { isInvalidArgument } from '../../errors.ts';
import { getXattrs } from '../xattr.ts';
import { applyLayer } from './apply-layer.ts';

const run = promisify(execFile);
const asRoot = process.getuid?.() === 0;

type Entry = { header: Pick<tar.Header, 'name' | 'type'> & Partial<tar.Header>; body?: Buffer };

const header = (h: Entry['header'], size: number): tar.Header => ({
  mode: 0o100644,
  uid: 0,
  gid: 0,
  mtime: new Date(0),
  linkname: '',
  uname: '',
  gname: '',
  devmajor: 0,
  devminor: 0,
  ...h,
  size,
});

/** Tar bytes of `entries` as tar-stream writes them; without the end-of-archive blocks when `open`. */
async function tarOf(entries: readonly Entry[], open = false): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (e.body) pack.entry(header(e.header, e.body.length), e.body, cb);
      else pack.entry(header(e.header, 0), cb);
    });
  }
  pack.finalize();
  await collected;
  const all = Buffer.concat(chunks);
  return open ? all.subarray(0, all.length - 1024) : all;
}

/** Changes the header block at `at` (its size field, its typeflag) and fixes its checksum. */
function patchHeader(buf: Buffer, at: number, change: { size?: number; typeflag?: string }): void {
  if (change.size !== undefined) {
    buf.write(`${change.size.toString(8).padStart(11, '0')}\0`, at + 124, 'latin1');
  }
  if (change.typeflag !== undefined) buf.write(change.typeflag, at + 156, 'latin1');
  buf.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (let i = at; i < at + 512; i++) sum += buf[i]!;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, at + 148, 'latin1');
}

/** A PAX record: its own length in decimal, then `key=value`. */
function paxRecord(key: string, value: string | Buffer): Buffer {
  const rest = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')]);
  let len = rest.length + 1;
  while (String(len).length + rest.length !== len) len++;
  return Buffer.concat([Buffer.from(String(len)), rest]);
}

const file = (name: string, content: string | Buffer): Entry => ({
  header: { name, type: 'file' },
  body: Buffer.from(content),
});

describe('layer applier: tar framing as containerd reads it', () => {
  let base: string;
  let n = 0;
  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'strata-applier-'));
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });
  const apply = async (bytes: Buffer): Promise<string> => {
    const root = join(base, `root-${++n}`);
    await mkdir(root);
    await applyLayer(root, Readable.from([bytes]), { chown: false });
    return root;
  };

  // Go's reader gives symlinks, hardlinks, devices, fifos and directories no data, whatever their size
  // field says. A reader that skips "their data" sees a different archive: whatever it skips, containerd
  // (and every Go-based scanner) applies, and a crafted skipped region can swallow entries in turn.
  for (const type of ['symlink', 'link', 'fifo'] as const) {
    test(`a ${type} header's size field carries no data: what follows it is applied`, async () => {
      const head = await tarOf([file('target', 't'), { header: { name: 'node', type, linkname: 'target' } }]);
      const hidden = await tarOf([file('hidden', 'seen by containerd')], true);
      const bytes = Buffer.concat([head.subarray(0, head.length - 1024), hidden, Buffer.alloc(1024)]);
      patchHeader(bytes, 1024, { size: hidden.length }); // the node's header, after target's header and body
      const root = await apply(bytes);
      assert.equal(await readFile(join(root, 'hidden'), 'utf8'), 'seen by containerd');
      assert.deepEqual((await readdir(root)).sort(), ['hidden', 'node', 'target']);
      if (type === 'symlink') assert.ok((await lstat(join(root, 'node'))).isSymbolicLink());
    });
  }

  // GNU tar's sparse files in PAX form: Go's reader (so containerd) gives the entry its real name and
  // size from the GNU.sparse.* records and reads the holes back as zeros.
  const sparseTar = async (version: string): Promise<{ bytes: Buffer; content: Buffer }> => {
    const dir = join(base, `sparse-src-${++n}`);
    await mkdir(dir);
    const content = Buffer.alloc(3 * 1024 * 1024);
    content.write('head', 0);
    content.write('middle', 1024 * 1024 + 7);
    content.write('tail', content.length - 4);
    const fd = await open(join(dir, 'sp'), 'w');
    // Written piecewise so the zeros between are holes that tar --sparse finds.
    await fd.write(content.subarray(0, 4), 0, 4, 0);
    await fd.write(Buffer.from('middle'), 0, 6, 1024 * 1024 + 7);
    await fd.write(Buffer.from('tail'), 0, 4, content.length - 4);
    await fd.close();
    const out = join(dir, 'layer.tar');
    await run('tar', [
      '--format=posix',
      '--sparse',
      `--sparse-version=${version}`,
      '-cf',
      out,
      '-C',
      dir,
      'sp',
    ]);
    return { bytes: await readFile(out), content };
  };

  for (const version of ['1.0', '0.1']) {
    test(`a GNU sparse file (PAX format ${version}) is applied under its real name with its holes`, async () => {
      const { bytes, content } = await sparseTar(version);
      const root = await apply(bytes);
      assert.deepEqual(await readdir(root), ['sp']);
      assert.ok((await readFile(join(root, 'sp'))).equals(content));
    });
  }

  /** A GNU sparse file (PAX format 1.0) of `segments` empty segments 16 bytes apart, as a layer. */
  const sparseMapLayer = (segments: number): Promise<Buffer> => {
    const lines = [String(segments)];
    for (let i = 0; i < segments; i++) lines.push(String(i * 16), '0');
    const map = Buffer.from(`${lines.join('\n')}\n`);
    const pax = {
      'GNU.sparse.major': '1',
      'GNU.sparse.minor': '0',
      'GNU.sparse.name': 'sp',
      'GNU.sparse.realsize': String(segments * 16),
    };
    // The map fills whole blocks at the head of the data.
    const body = Buffer.concat([map, Buffer.alloc(-map.length & 511)]);
    return tarOf([{ header: { name: 'GNUSparseFile.0/sp', type: 'file', pax }, body }]);
  };

  test('a GNU sparse map is held in memory only up to 4 MiB', async () => {
    // containerd reads a map of any size into memory; a 128 MiB one (130 KiB gzipped) took the daemon to
    // 3 GiB. 200,000 segments (1.8 MiB of map) apply, as with containerd; a map over 4 MiB is refused.
    const root = await apply(await sparseMapLayer(200_000));
    assert.equal((await lstat(join(root, 'sp'))).size, 200_000 * 16);
    await assert.rejects(
      apply(await sparseMapLayer(600_000)),
      (err: Error) => isInvalidArgument(err) && /sparse map/.test(err.message),
    );
  });

  test('a GNU sparse file of format 0.0 is refused, not written wrong', async () => {
    const { bytes } = await sparseTar('0.0');
    await assert.rejects(apply(bytes), isInvalidArgument);
  });

  // Go's reader ends the archive at two zero blocks (containerd then only hashes the rest), and takes a
  // zero block followed by a header as corrupt. A reader that reads on applies entries nobody else sees.
  test('entries after the end-of-archive blocks are not applied, but are in the diff_id', async () => {
    const bytes = Buffer.concat([
      await tarOf([file('a', 'a')]),
      await tarOf([file('hidden', 'after the end')]),
    ]);
    const root = join(base, `root-${++n}`);
    await mkdir(root);
    const r = await applyLayer(root, Readable.from([bytes]), { chown: false });
    assert.deepEqual(await readdir(root), ['a']);
    assert.equal(r.diffId, `sha256:${createHash('sha256').update(bytes).digest('hex')}`);
    assert.equal(r.size, bytes.length);
  });

  test('bytes that are no tar after the end-of-archive blocks are only hashed', async () => {
    const root = await apply(Buffer.concat([await tarOf([file('a', 'a')]), Buffer.from('x'.repeat(100))]));
    assert.deepEqual(await readdir(root), ['a']);
  });

  test('a single zero block followed by a header is refused', async () => {
    const a = await tarOf([file('a', 'a')], true);
    const bytes = Buffer.concat([a, Buffer.alloc(512), await tarOf([file('hidden', 'x')])]);
    await assert.rejects(apply(bytes), isInvalidArgument);
  });

  // Node's utimes takes a negative number of seconds for "now"; containerd sets what the layer says.
  test('times before 1970 are kept, on files, directories and symlinks', async () => {
    const before1970 = { mtime: '-86400.25' };
    const root = await apply(
      await tarOf([
        { header: { name: 'dir/', type: 'directory', pax: before1970 } },
        { header: { name: 'dir/file', type: 'file', pax: before1970 }, body: Buffer.from('x') },
        { header: { name: 'dir/link', type: 'symlink', linkname: 'file', pax: before1970 } },
      ]),
    );
    for (const name of ['dir', 'dir/file', 'dir/link']) {
      const st = await lstat(join(root, name), { bigint: true });
      assert.equal(st.mtimeNs, -86_400_250_000_000n, name);
    }
  });

  // Go's reader returns a global PAX header as an entry of its own, which containerd ignores; it never
  // changes the entries after it. tar-stream merges it into every entry that has PAX records of its own.
  test('a global PAX header changes no entry after it', async () => {
    const bytes = await tarOf([
      file('pax_global_header', paxRecord('path', 'hijacked')),
      file('PaxHeader/a', paxRecord('mtime', '1600000000')),
      file('a', 'a'),
    ]);
    patchHeader(bytes, 0, { typeflag: 'g' });
    patchHeader(bytes, 1024, { typeflag: 'x' });
    const root = await apply(bytes);
    assert.deepEqual(await readdir(root), ['a']);
  });

  // In Go's reader a GNU long name overrides a PAX path (containerd writes the GNU name); tar-stream lets
  // the PAX path win.
  test('a GNU long name wins over a PAX path, as in Go', async () => {
    const long = `${'d'.repeat(120)}/from-gnu`;
    const bytes = await tarOf([
      file('././@LongLink', `${long}\0`),
      { header: { name: 'from-pax', type: 'file', pax: { mtime: '1600000000' } }, body: Buffer.from('x') },
    ]);
    patchHeader(bytes, 0, { typeflag: 'L' });
    const root = await apply(bytes);
    assert.deepEqual(await readdir(root), ['d'.repeat(120)]);
    assert.equal(await readFile(join(root, long), 'utf8'), 'x');
  });

  // Go's reader makes a directory of an old-style regular file (typeflag NUL) whose final name ends in
  // `/`, and of nothing else: a typeflag '0' entry named `x/` is a file, its data is its content.
  test("a '0' entry named x/ is a file with its data, not a directory followed by headers", async () => {
    const inner = await tarOf([file('hidden', 'x')], true);
    const root = await apply(await tarOf([{ header: { name: 'x/', type: 'file' }, body: inner }]));
    assert.deepEqual(await readdir(root), ['x']);
    assert.ok((await readFile(join(root, 'x'))).equals(inner));
  });

  test('a NUL-typeflag entry whose GNU long name ends in / is a directory', async () => {
    const bytes = await tarOf([file('././@LongLink', 'dir/\0'), file('x', '')]);
    patchHeader(bytes, 0, { typeflag: 'L' });
    patchHeader(bytes, 1024, { typeflag: '\0' });
    const root = await apply(bytes);
    assert.ok((await lstat(join(root, 'dir'))).isDirectory());
  });

  // Typeflag N (old GNU file names) is no long-name header to Go: containerd refuses the entry.
  test('a typeflag N header does not rename the next entry', async () => {
    const bytes = await tarOf([file('././@LongLink', 'renamed\0'), file('x', 'x')]);
    patchHeader(bytes, 0, { typeflag: 'N' });
    await assert.rejects(apply(bytes), isInvalidArgument);
  });

  // A ustar block with star's trailer is a star header to Go, whose name prefix is 131 bytes (atime and
  // ctime follow it); tar-stream read 155 bytes of prefix, and so another name.
  test('a star header has a 131-byte name prefix', async () => {
    const bytes = await tarOf([file('f', 'x')]);
    bytes.write('p'.repeat(131), 345, 'latin1');
    bytes.write('0'.repeat(11), 476, 'latin1');
    bytes.write('0'.repeat(11), 488, 'latin1');
    bytes.write('tar\0', 508, 'latin1');
    patchHeader(bytes, 0, {});
    const root = await apply(bytes);
    assert.equal(await readFile(join(root, 'p'.repeat(131), 'f'), 'utf8'), 'x');
  });

  // Go's reader refuses a PAX header with a malformed record; tar-stream used the records before it.
  for (const [what, records] of [
    [
      'a record after the valid ones that is no record',
      Buffer.concat([paxRecord('path', 'b'), Buffer.from('garbage')]),
    ],
    ['a record whose length is wrong', '12 path=b\n'],
  ] as const) {
    test(`a PAX header with ${what} is refused`, async () => {
      const bytes = await tarOf([file('PaxHeader/a', records), file('a', 'a')]);
      patchHeader(bytes, 0, { typeflag: 'x' });
      await assert.rejects(apply(bytes), isInvalidArgument);
    });
  }

  // Extended attribute values are bytes: a capability or an ACL is rarely valid UTF-8.
  test('an xattr value that is no UTF-8 is set byte for byte', {
    skip: !asRoot && 'needs root',
  }, async () => {
    // A version-2 file capability granting cap_setuid (bit 7) permitted and effective.
    const capability = Buffer.from('0100000280000000000000000000000000000000', 'hex');
    const bytes = await tarOf([
      file('PaxHeader/tool', paxRecord('SCHILY.xattr.security.capability', capability)),
      file('tool', 'x'),
    ]);
    patchHeader(bytes, 0, { typeflag: 'x' });
    const root = await apply(bytes);
    assert.deepEqual(await getXattrs(join(root, 'tool')), { 'security.capability': capability });
  });

  // Go refuses a PAX number it cannot parse; tar-stream read "0x10" as a size of 0 and so took the data
  // that follows for headers.
  for (const [key, value] of [
    ['size', '0x10'],
    ['uid', '12abc'],
    ['mtime', '1.5e3'],
  ] as const) {
    test(`a PAX ${key} of ${JSON.stringify(value)} is refused`, async () => {
      const inner = await tarOf([file('hidden', 'x')], true);
      const bytes = await tarOf([file('PaxHeader/a', paxRecord(key, value)), file('a', inner)]);
      patchHeader(bytes, 0, { typeflag: 'x' });
      await assert.rejects(apply(bytes), isInvalidArgument);
    });
  }

  // Go refuses a header whose octal field holds anything but octal digits; tar-stream read "…18" as 1.
  test('a header size field that is no octal number is refused', async () => {
    const bytes = await tarOf([file('a', 'x')]);
    bytes.write('00000000018\0', 124, 'latin1');
    patchHeader(bytes, 0, {});
    await assert.rejects(apply(bytes), isInvalidArgument);
  });

  // Go reads a number field whose first byte has the high bit set as base-256 (GNU tar writes sizes over
  // 8 GiB so); the value is all the bytes after that bit.
  test('a base-256 size field is read as Go reads it', async () => {
    const bytes = await tarOf([file('a', 'abc'), file('b', 'b')]);
    bytes.fill(0, 124, 136);
    bytes[124] = 0x80;
    bytes[135] = 3;
    patchHeader(bytes, 0, {});
    const root = await apply(bytes);
    assert.equal(await readFile(join(root, 'a'), 'utf8'), 'abc');
    assert.equal(await readFile(join(root, 'b'), 'utf8'), 'b');
  });

  test('a negative base-256 size is refused', async () => {
    const bytes = await tarOf([file('a', 'abc')]);
    bytes.fill(0xff, 124, 136);
    patchHeader(bytes, 0, {});
    await assert.rejects(apply(bytes), isInvalidArgument);
  });

  // Go accepts a checksum that is the sum of the block's bytes taken as signed (old Sun tar wrote those).
  test('a header checksum summed over signed bytes is accepted', async () => {
    const name = Buffer.from('é-name', 'utf8'); // bytes over 0x7f count negative in the signed sum
    const bytes = await tarOf([file('x', 'x')]);
    bytes.fill(0, 0, 100);
    name.copy(bytes, 0);
    patchHeader(bytes, 0, {});
    let signed = 0;
    for (let i = 0; i < 512; i++) {
      const b = i >= 148 && i < 156 ? 0x20 : bytes[i]!;
      signed += b < 0x80 ? b : b - 0x100;
    }
    bytes.write(`${signed.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    const root = await apply(bytes);
    assert.equal(await readFile(join(root, 'é-name'), 'utf8'), 'x');
  });

  test('a header with a wrong checksum is refused, naming the offset', async () => {
    const bytes = await tarOf([file('a', 'a'), file('b', 'b')]);
    bytes[1024] = 0x63; // b's name changes, its checksum does not
    await assert.rejects(
      apply(bytes),
      (err: Error) => isInvalidArgument(err) && /offset 1024/.test(err.message),
    );
  });

  test('bytes that are no tar are refused, naming the offset', async () => {
    await assert.rejects(
      apply(Buffer.from('not a tar at all '.repeat(100))),
      (err: Error) => isInvalidArgument(err) && /offset 0\b/.test(err.message),
    );
  });

  // PAX and GNU long-name headers are held in memory: Go refuses those over 1 MiB, and so do we.
  for (const typeflag of ['x', 'L']) {
    test(`a '${typeflag}' header over 1 MiB is refused`, async () => {
      const big = Buffer.alloc((1 << 20) + 1, 0x61);
      const bytes = await tarOf([file('meta', big), file('a', 'a')]);
      patchHeader(bytes, 0, { typeflag });
      await assert.rejects(apply(bytes), isInvalidArgument);
    });
  }

  test('a PAX header of exactly 1 MiB is read', async () => {
    const record = paxRecord('comment', 'c'.repeat((1 << 20) - 100));
    const want = (1 << 20) - record.length;
    let pad = paxRecord('x', '');
    for (let v = want - 10; pad.length !== want; v++) pad = paxRecord('x', 'y'.repeat(v));
    const records = Buffer.concat([record, pad]);
    assert.equal(records.length, 1 << 20);
    const bytes = await tarOf([file('PaxHeader/a', records), file('a', 'a')]);
    patchHeader(bytes, 0, { typeflag: 'x' });
    const root = await apply(bytes);
    assert.deepEqual(await readdir(root), ['a']);
  });

  // Go returns a global header as an entry of its own: the meta headers before it apply to nothing.
  test('a GNU long name before a global PAX header names no entry', async () => {
    const bytes = await tarOf([
      file('././@LongLink', 'renamed\0'),
      file('pax_global_header', paxRecord('comment', 'c')),
      file('a', 'a'),
    ]);
    patchHeader(bytes, 0, { typeflag: 'L' });
    patchHeader(bytes, 1024, { typeflag: 'g' });
    const root = await apply(bytes);
    assert.deepEqual(await readdir(root), ['a']);
  });

  // A stream cut anywhere but at a block boundary between entries fails the apply.
  for (const [where, cut] of [
    ['inside a header', 1024 + 100],
    ['inside the data', 512 + 1000],
    ['inside the padding', 512 + 5000 + 10],
    ['inside the end-of-archive blocks', 512 + 5120 + 512 + 512 + 600],
  ] as const) {
    test(`a tar that ends ${where} is refused`, async () => {
      const bytes = await tarOf([file('big', 'z'.repeat(5000)), file('b', 'b')]);
      await assert.rejects(
        apply(bytes.subarray(0, cut)),
        (err: Error) => isInvalidArgument(err) && /ends inside/.test(err.message),
      );
    });
  }

  test('a tar that ends at a block boundary without end-of-archive blocks is complete', async () => {
    const root = await apply(await tarOf([file('a', 'a'), file('b', 'b')], true));
    assert.deepEqual((await readdir(root)).sort(), ['a', 'b']);
  });

  // Entry data reaches the applier in chunks as the layer streams in: a big file is never held whole.
  test('a large file is streamed, in chunks, with its bytes intact', async () => {
    const content = Buffer.alloc(6 << 20);
    for (let i = 0; i < content.length; i += 4096) content.writeUInt32BE(i, i);
    const bytes = await tarOf([file('big', content), file('after', 'x')]);
    const chunks: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += 65_536 + 3) chunks.push(bytes.subarray(i, i + 65_536 + 3));
    const root = join(base, `root-${++n}`);
    await mkdir(root);
    await applyLayer(root, Readable.from(chunks), { chown: false });
    assert.ok((await readFile(join(root, 'big'))).equals(content));
    assert.equal(await readFile(join(root, 'after'), 'utf8'), 'x');
  });
});
