// What a Dockerfile reads from outside itself, found with a kept parser (dockerfile-ast): the images its
// FROM lines, `COPY --from` and `RUN --mount=…,from=` flags name (with global ARGs and build args
// substituted, stage names told apart), and the context paths its COPY/ADD instructions read. The same
// parse pins the images: the Dockerfile buildah runs has every external image replaced by the digest the
// build key hashed.
import { DockerfileParser, Instruction, ModifiableInstruction } from 'dockerfile-ast';
import { invalidArgument } from '../errors.ts';

// dockerfile-ast (0.7.1, pinned exactly in package.json for this) drops an instruction's flags from its arguments with one Array.shift per flag,
// each moving the whole list: O(flags × arguments) per call, and its parser makes that call for every
// COPY, ADD and RUN. A COPY of 20,000 `--x` words (512 KiB) held the event loop for 55 s. One slice gives
// the same list in linear time. getFlags reads getArguments itself, with its list already started (so
// this returns every argument then), as the original does.
const allArguments = Instruction.prototype.getArguments;
ModifiableInstruction.prototype.getArguments = function getArguments(this: ModifiableInstruction) {
  const args = allArguments.call(this);
  return args.slice(this.getFlags().length);
};

/** An external image the Dockerfile reads, as written after substitution, with where it appears. */
export interface ImageUse {
  /** The image as the Dockerfile names it once ARGs are substituted (`busybox`, `reg:5000/a/b:1`). */
  image: string;
  /** Zero-based [line, start char, end char) of the text to replace when pinning. */
  range: { line: number; start: number; end: number };
  /** FROM's `--platform` once ARGs are substituted, when it names one. */
  platform?: string;
}

/** How the inputs name an image use: the image, and the platform when FROM asks for one. */
export function imageKey(use: Pick<ImageUse, 'image' | 'platform'>): string {
  return use.platform ? `${use.image} --platform=${use.platform}` : use.image;
}

export interface DockerfileAnalysis {
  /** External images, in order of appearance (repeats included, one per place). */
  images: ImageUse[];
  /**
   * Context paths COPY/ADD read (cleaned, relative, may hold Go glob characters), or 'all' when the
   * Dockerfile reads the context in a way not followed here (a variable in a source, RUN --mount).
   */
  contextSources: string[] | 'all';
  /** Remote ADD sources (URLs): their content is not part of the key; named in it. */
  remoteSources: string[];
}

/**
 * The longest Dockerfile accepted (buildah itself has no limit; the key reads it whole). The parse costs
 * about 1 µs a byte (dockerfile-ast builds objects and positions for every word), so this bounds an
 * analysis to a few hundred milliseconds; the builder runs it on a worker thread (dockerfile-analyzer.ts).
 */
export const MAX_DOCKERFILE_BYTES = 256 << 10;

/**
 * What substituting variables may produce in one analysis, all together: `ARG A=$A$A` doubles A at each
 * line, so without a bound thirty lines ask for a gigabyte.
 */
export const MAX_EXPANDED_BYTES = 1 << 20;

const VAR_RE = /\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g;

/**
 * Substitutes `$X`, `${X}`, `${X:-word}` and `${X:+word}` as Docker does in FROM; unknown names become ''.
 * `budget.left` (characters) is what the result may take; it is refused past that, before it is built.
 */
export function expandVariables(
  text: string,
  vars: ReadonlyMap<string, string>,
  budget: { left: number } = { left: Number.POSITIVE_INFINITY },
): string {
  let size = text.length;
  const out = text.replace(
    VAR_RE,
    (_m, braced: string | undefined, op: string | undefined, word = '', bare) => {
      const name = (braced ?? bare) as string;
      const value = vars.get(name);
      const v = op === '-' ? value || word : op === '+' ? (value ? word : '') : (value ?? '');
      size += v.length;
      if (size > budget.left) {
        throw invalidArgument(`Dockerfile variables expand to more than ${MAX_EXPANDED_BYTES} characters`);
      }
      return v;
    },
  );
  budget.left -= out.length;
  return out;
}

/** A context path as Docker cleans a COPY source: relative, no `.` or empty components. */
export function cleanSourcePath(src: string): string {
  const parts: string[] = [];
  for (const part of src.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return parts.join('/');
}

interface FlagLike {
  getName(): string;
  getValue(): string | null;
  getValueRange(): {
    start: { line: number; character: number };
    end: { line: number; character: number };
  } | null;
}

function flags(instruction: Instruction): FlagLike[] {
  return (instruction as { getFlags?: () => FlagLike[] }).getFlags?.() ?? [];
}

function flag(instruction: Instruction, name: string): FlagLike | undefined {
  return flags(instruction).find((f) => f.getName() === name);
}

/** The image a `--mount=…,from=<image>` names (not a stage), with where its name sits. */
function mountImages(mount: FlagLike, stages: ReadonlySet<string>): ImageUse[] {
  const value = mount.getValue() ?? '';
  const r = mount.getValueRange();
  const out: ImageUse[] = [];
  let offset = 0;
  for (const option of value.split(',')) {
    const from = option.toLowerCase().startsWith('from=') ? option.slice('from='.length) : '';
    if (from !== '' && !stages.has(from.toLowerCase()) && r) {
      if (from.includes('$') || r.start.line !== r.end.line) {
        throw invalidArgument(
          `Dockerfile line ${r.start.line + 1}: a RUN --mount image with variables or split over lines is not supported`,
        );
      }
      const start = r.start.character + offset + 'from='.length;
      out.push({ image: from, range: { line: r.start.line, start, end: start + from.length } });
    }
    offset += option.length + 1;
  }
  return out;
}

/** The non-flag arguments of COPY/ADD, in JSON or shell form. */
function copyArguments(instruction: Instruction): string[] {
  const args = instruction.getArguments();
  // Only a first argument that starts with `[` can begin the exec form (the raw text is read only then).
  if (args[0]?.getValue().startsWith('[')) {
    const content = (instruction.getArgumentsContent() ?? '').replace(/^(\s*--\S+)+\s*/, '');
    if (content.startsWith('[')) {
      // The parser's JSON strings lose inner spaces; the exec form is JSON, so read it as JSON.
      try {
        const parsed = JSON.parse(content) as unknown;
        if (Array.isArray(parsed) && parsed.every((v) => typeof v === 'string')) return parsed as string[];
      } catch {
        // Not valid JSON: Docker then reads it in shell form, as below.
      }
    }
  }
  return args.map((a) => a.getValue());
}

/** Refuses a Dockerfile longer than MAX_DOCKERFILE_BYTES, before anything parses it. */
export function checkDockerfileSize(text: string): void {
  if (Buffer.byteLength(text) > MAX_DOCKERFILE_BYTES) {
    throw invalidArgument(`Dockerfile is larger than ${MAX_DOCKERFILE_BYTES} bytes`);
  }
}

/**
 * Parses a Dockerfile. `buildArgs` override the defaults of global ARGs (those before the first FROM),
 * which are what FROM lines may use.
 */
export function analyzeDockerfile(
  text: string,
  buildArgs: ReadonlyMap<string, string> = new Map(),
): DockerfileAnalysis {
  checkDockerfileSize(text);
  const df = DockerfileParser.parse(text);
  const globals = new Map<string, string>();
  const budget = { left: MAX_EXPANDED_BYTES };
  const expand = (t: string) => expandVariables(t, globals, budget);
  for (const arg of df.getInitialARGs()) {
    const p = arg.getProperty();
    if (!p) continue;
    const name = p.getName();
    const given = buildArgs.get(name);
    globals.set(name, given ?? expand(p.getValue() ?? ''));
  }

  const stages = new Set<string>();
  const images: ImageUse[] = [];
  const sources: string[] = [];
  const remoteSources: string[] = [];
  let readsAll = false;
  let froms = 0;
  for (const instruction of df.getInstructions()) {
    const keyword = instruction.getKeyword();
    if (keyword === 'FROM') {
      froms++;
      const args = instruction.getArguments();
      const flagCount = args.findIndex((a) => !a.getValue().startsWith('--'));
      const imageArg = flagCount >= 0 ? args[flagCount] : undefined;
      if (!imageArg)
        throw invalidArgument(
          `Dockerfile line ${instruction.getRange().start.line + 1}: FROM names no image`,
        );
      const image = expand(imageArg.getValue());
      if (image === '') {
        throw invalidArgument(
          `Dockerfile line ${instruction.getRange().start.line + 1}: FROM image is empty after substitution`,
        );
      }
      const r = imageArg.getRange();
      if (r.start.line !== r.end.line) {
        throw invalidArgument(
          `Dockerfile line ${r.start.line + 1}: a FROM image split over lines is not supported`,
        );
      }
      if (image !== 'scratch' && !stages.has(image.toLowerCase())) {
        // The platform picks the manifest of an index the image is pinned to.
        const platformFlag = flag(instruction, 'platform')?.getValue();
        const platform = platformFlag && expand(platformFlag);
        images.push({
          image,
          range: { line: r.start.line, start: r.start.character, end: r.end.character },
          ...(platform && { platform }),
        });
      }
      const asIndex = args.findIndex((a) => a.getValue().toLowerCase() === 'as');
      const stageName = asIndex >= 0 ? args[asIndex + 1]?.getValue() : undefined;
      if (stageName) stages.add(stageName.toLowerCase());
      stages.add(String(froms - 1));
      continue;
    }
    if (froms === 0) continue;
    if (
      keyword === 'RUN' &&
      (flag(instruction, 'mount') || /(^|\s)--mount[=\s]/.test(instruction.getArgumentsContent() ?? ''))
    ) {
      // A bind mount reads the context in ways not followed here; an image it names is pinned and keyed.
      readsAll = true;
      for (const mount of flags(instruction).filter((f) => f.getName() === 'mount')) {
        images.push(...mountImages(mount, stages));
      }
      continue;
    }
    if (keyword !== 'COPY' && keyword !== 'ADD') continue;
    const fromFlag = flag(instruction, 'from');
    if (fromFlag) {
      const from = fromFlag.getValue() ?? '';
      const r = fromFlag.getValueRange();
      if (!stages.has(from.toLowerCase()) && r) {
        if (from.includes('$'))
          throw invalidArgument(
            `Dockerfile line ${r.start.line + 1}: variables in COPY --from are not supported`,
          );
        images.push({
          image: from,
          range: { line: r.start.line, start: r.start.character, end: r.end.character },
        });
      }
      continue;
    }
    for (const src of copyArguments(instruction).slice(0, -1)) {
      if (keyword === 'ADD' && /^(https?|git):\/\/|^git@/.test(src)) {
        remoteSources.push(src);
      } else if (src.includes('$')) {
        readsAll = true;
      } else {
        sources.push(cleanSourcePath(src));
      }
    }
  }
  if (froms === 0) throw invalidArgument('Dockerfile has no FROM instruction');
  return { images, contextSources: readsAll ? 'all' : [...new Set(sources)].sort(), remoteSources };
}

/**
 * The Dockerfile with each external image replaced by `pinned(imageKey(use))` (the digest reference the
 * build key hashed), so the build reads exactly what was keyed whatever the tags do meanwhile.
 */
export function pinImages(
  text: string,
  uses: readonly ImageUse[],
  pinned: (image: string) => string,
): string {
  const lines = text.split('\n');
  // Right to left within a line, so earlier ranges stay valid.
  const ordered = [...uses].sort((a, b) => b.range.line - a.range.line || b.range.start - a.range.start);
  for (const use of ordered) {
    const line = lines[use.range.line] ?? '';
    lines[use.range.line] =
      `${line.slice(0, use.range.start)}${pinned(imageKey(use))}${line.slice(use.range.end)}`;
  }
  return lines.join('\n');
}
