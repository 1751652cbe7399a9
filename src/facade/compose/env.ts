// Env merge of the composed image, as Gitpod's registry-facade does it. Images added on top of the base
// (IDE, supervisor, static images) steer the workspace env through prefixed variables in their own config:
//   GITPOD_ENV_SET_<NAME>=v      NAME=v (added at the end when new; an empty v is allowed)
//   GITPOD_ENV_APPEND_<NAME>=v   NAME = v + old  (yes: the value goes in FRONT; skipped when NAME or v is empty)
//   GITPOD_ENV_PREPEND_<NAME>=v  NAME = old + v  (the value goes AFTER; skipped when NAME or v is empty)
// The names read inverted relative to the effect; that is the observable behaviour IDE images rely on
// (`GITPOD_ENV_APPEND_PATH=/ide/bin:` puts /ide/bin first). No separator is inserted: images carry their own.
// Unprefixed variables of added images are ignored.

export type EnvOp = 'set' | 'append' | 'prepend';

export interface EnvModifier {
  op: EnvOp;
  name: string;
  value: string;
}

export const ENV_PREFIX_SET = 'GITPOD_ENV_SET_';
export const ENV_PREFIX_APPEND = 'GITPOD_ENV_APPEND_';
export const ENV_PREFIX_PREPEND = 'GITPOD_ENV_PREPEND_';

interface Entry {
  /** null: the entry had no `=` and has not been touched since, so it is written back bare. */
  value: string | null;
}

/**
 * `KEY=value` list → ordered map. A repeated key keeps its first position and its last value. (Gitpod
 * writes such a key out once per occurrence, every copy holding the last value; the environment a
 * process sees is the same, without the duplicates.)
 */
function parseEnv(env: readonly string[]): Map<string, Entry> {
  const out = new Map<string, Entry>();
  for (const e of env) {
    const i = e.indexOf('=');
    const key = i < 0 ? e : e.slice(0, i);
    const value = i < 0 ? null : e.slice(i + 1);
    const prev = out.get(key);
    if (prev) prev.value = value;
    else out.set(key, { value });
  }
  return out;
}

function serializeEnv(env: Map<string, Entry>): string[] {
  return [...env].map(([k, e]) => (e.value === null ? k : `${k}=${e.value}`));
}

/** The modifiers an added image's config env asks for, in that env's order. */
export function envModifiersOf(env: readonly string[] | null | undefined): EnvModifier[] {
  const out: EnvModifier[] = [];
  for (const [key, { value: raw }] of parseEnv(env ?? [])) {
    const value = raw ?? '';
    if (key.startsWith(ENV_PREFIX_APPEND)) {
      const name = key.slice(ENV_PREFIX_APPEND.length);
      if (name !== '' && value !== '') out.push({ op: 'append', name, value });
    } else if (key.startsWith(ENV_PREFIX_PREPEND)) {
      const name = key.slice(ENV_PREFIX_PREPEND.length);
      if (name !== '' && value !== '') out.push({ op: 'prepend', name, value });
    } else if (key.startsWith(ENV_PREFIX_SET)) {
      const name = key.slice(ENV_PREFIX_SET.length);
      if (name !== '') out.push({ op: 'set', name, value });
    }
  }
  return out;
}

/**
 * Applies the modifiers in order to the base env. With no modifiers the base env is returned as it was
 * (Gitpod leaves `Env` alone then, even an absent one); otherwise a new list is returned.
 */
export function applyEnvModifiers(
  base: readonly string[] | null | undefined,
  modifiers: readonly EnvModifier[],
): readonly string[] | null | undefined {
  if (modifiers.length === 0) return base;
  const env = parseEnv(base ?? []);
  for (const m of modifiers) {
    const cur = env.get(m.name);
    if (!cur) {
      env.set(m.name, { value: m.value });
      continue;
    }
    const old = cur.value ?? '';
    if (m.op === 'set') cur.value = m.value;
    else if (m.op === 'append') cur.value = m.value + old;
    else cur.value = old + m.value;
  }
  return serializeEnv(env);
}
