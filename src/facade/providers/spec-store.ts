// Strata's own spec store: one protobuf-JSON file per id under `<dir>/specs/`, written atomically, so the
// CLI can edit it while a facade or `strata spec serve` reads it. Ids follow the repository-name grammar
// (what can appear in /v2/<prefix>remote/<id>/…), so every stored spec is reachable.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { invalidArgument, messageOf, notFound } from '../../errors.ts';
import { isValidRepositoryPath, MAX_NAME_LENGTH } from '../../oci/reference.ts';
import { type ImageSpec, type SpecJsonCodec, validateImageSpec } from '../spec.ts';
import type { SpecProvider } from './provider.ts';

const MAX_SPEC_FILE = 16 * 1024 * 1024;

export function validateSpecId(id: string): void {
  if (id === '' || id.length > MAX_NAME_LENGTH || !isValidRepositoryPath(id)) {
    throw invalidArgument(
      `spec id ${JSON.stringify(id)}: want lowercase letters and digits, separated by '.', '_', '-' or '/' (at most ${MAX_NAME_LENGTH} characters)`,
    );
  }
}

export class SpecStore implements SpecProvider {
  readonly dir: string;
  private readonly specsDir: string;
  private readonly tmpDir: string;
  private readonly json: SpecJsonCodec;

  constructor(dir: string, json: SpecJsonCodec) {
    this.dir = dir;
    this.json = json;
    this.specsDir = join(dir, 'specs');
    this.tmpDir = join(dir, 'tmp');
  }

  private fileOf(id: string): string {
    validateSpecId(id);
    // '/' is the only character of the grammar a file name cannot hold.
    return join(this.specsDir, `${id.replaceAll('/', '%2F')}.json`);
  }

  async put(id: string, spec: ImageSpec): Promise<void> {
    validateImageSpec(spec, { allowHttpHost: () => true });
    const file = this.fileOf(id);
    await mkdir(this.specsDir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
    const tmp = join(this.tmpDir, `${randomBytes(8).toString('hex')}.json`);
    try {
      await writeFile(tmp, `${JSON.stringify(this.json.format(spec), null, 2)}\n`, { flag: 'wx' });
      await rename(tmp, file);
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async getSpec(id: string): Promise<ImageSpec> {
    const file = this.fileOf(id);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw notFound(`spec ${JSON.stringify(id)}: not found`);
      throw err;
    }
    if (text.length > MAX_SPEC_FILE) throw invalidArgument(`spec ${JSON.stringify(id)}: file too large`);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw invalidArgument(`spec ${JSON.stringify(id)}: ${messageOf(err)}`);
    }
    return this.json.parse(json, `spec ${JSON.stringify(id)}`);
  }

  async remove(id: string): Promise<void> {
    const file = this.fileOf(id);
    try {
      await rm(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw notFound(`spec ${JSON.stringify(id)}: not found`);
      throw err;
    }
  }

  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.specsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return names
      .filter((n) => n.endsWith('.json'))
      .map((n) => n.slice(0, -5).replaceAll('%2F', '/'))
      .sort();
  }
}
