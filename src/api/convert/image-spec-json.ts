// registryfacade.ImageSpec's protobuf-JSON form (baseRef, ideRef, contentLayer, supervisorRef, ideLayerRef),
// as kept in the spec store and fixed-spec files and read by `strata spec`, written out by hand for this
// one message: the protobuf runtime's JSON codec costs `strata spec put` ~70 modules of start-up, and a
// put is on the way to every workspace start. It follows the protobuf JSON mapping (json or proto field
// names, null for a default, int64 as a number or a decimal string, bytes as base64 of either alphabet,
// unknown fields refused, at most one case of a oneof); image-spec-json.test.ts holds it to the runtime's.
import { invalidArgument } from '../../errors.ts';
import type { ContentLayer, ImageSpec, SpecJsonCodec } from '../../facade/spec.ts';

type JsonObject = Record<string, unknown>;

/** A message's fields: json name → proto name. */
const SPEC_FIELDS = {
  baseRef: 'base_ref',
  ideRef: 'ide_ref',
  contentLayer: 'content_layer',
  supervisorRef: 'supervisor_ref',
  ideLayerRef: 'ide_layer_ref',
} as const;
const LAYER_FIELDS = { remote: 'remote', direct: 'direct' } as const;
const REMOTE_FIELDS = {
  url: 'url',
  digest: 'digest',
  diffId: 'diff_id',
  mediaType: 'media_type',
  size: 'size',
} as const;
const DIRECT_FIELDS = { content: 'content' } as const;

/** The fields of a JSON object by json name (null values left out); unknown keys refused. */
function fieldsOf<F extends Record<string, string>>(
  json: unknown,
  fields: F,
  what: string,
): Partial<Record<keyof F, unknown>> {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw invalidArgument(`${what}: want a JSON object, got ${describe(json)}`);
  }
  const byName = new Map<string, keyof F>();
  for (const [jsonName, protoName] of Object.entries(fields)) {
    byName.set(jsonName, jsonName);
    byName.set(protoName, jsonName);
  }
  const out: Partial<Record<keyof F, unknown>> = {};
  for (const [key, value] of Object.entries(json as JsonObject)) {
    const field = byName.get(key);
    if (field === undefined) throw invalidArgument(`${what}: unknown field ${JSON.stringify(key)}`);
    if (value !== null) out[field] = value;
  }
  return out;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'string' ? JSON.stringify(v) : typeof v;
}

function str(v: unknown, what: string): string {
  if (v === undefined) return '';
  if (typeof v !== 'string') throw invalidArgument(`${what}: want a string, got ${describe(v)}`);
  return v;
}

function list(v: unknown, what: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw invalidArgument(`${what}: want an array, got ${describe(v)}`);
  return v;
}

/** An int64: an integer number, or a decimal string of one. */
function int64(v: unknown, what: string): bigint {
  if (v === undefined) return 0n;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (typeof v === 'string' && /^-?\d+$/.test(v.trim())) {
    const n = BigInt(v.trim());
    if (n >= -(2n ** 63n) && n < 2n ** 63n) return n;
  }
  throw invalidArgument(`${what}: want an int64, got ${describe(v)}`);
}

function bytes(v: unknown, what: string): Uint8Array {
  if (v === undefined) return new Uint8Array(0);
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v) || v.replace(/=+$/, '').length % 4 === 1) {
    throw invalidArgument(`${what}: want base64, got ${describe(v)}`);
  }
  return new Uint8Array(Buffer.from(v, 'base64'));
}

function layerFromJson(json: unknown, what: string): ContentLayer {
  const f = fieldsOf(json, LAYER_FIELDS, what);
  // A oneof's second case counts even when null, as the protobuf runtime counts it.
  if (Object.keys(json as JsonObject).length > 1) {
    throw invalidArgument(`${what}: both remote and direct set (a oneof holds one)`);
  }
  if (f.remote !== undefined) {
    const w = `${what}.remote`;
    const r = fieldsOf(f.remote, REMOTE_FIELDS, w);
    const size = int64(r.size, `${w}.size`);
    if (size > BigInt(Number.MAX_SAFE_INTEGER) || size < 0n) {
      throw invalidArgument(`${w}: size ${size} out of range`);
    }
    return {
      kind: 'remote',
      url: str(r.url, `${w}.url`),
      digest: str(r.digest, `${w}.digest`),
      diffId: str(r.diffId, `${w}.diffId`),
      mediaType: str(r.mediaType, `${w}.mediaType`),
      size: Number(size),
    };
  }
  if (f.direct !== undefined) {
    const d = fieldsOf(f.direct, DIRECT_FIELDS, `${what}.direct`);
    return { kind: 'direct', content: bytes(d.content, `${what}.direct.content`) };
  }
  throw invalidArgument(`${what}: neither remote nor direct`);
}

/** A spec from its protobuf-JSON form; `where` names it in errors. */
export function specFromJson(json: unknown, where: string): ImageSpec {
  const f = fieldsOf(json, SPEC_FIELDS, where);
  return {
    baseRef: str(f.baseRef, `${where}: baseRef`),
    ideRef: str(f.ideRef, `${where}: ideRef`),
    supervisorRef: str(f.supervisorRef, `${where}: supervisorRef`),
    ideLayerRefs: list(f.ideLayerRef, `${where}: ideLayerRef`).map((r, i) =>
      str(r, `${where}: ideLayerRef[${i}]`),
    ),
    contentLayers: list(f.contentLayer, `${where}: contentLayer`).map((l, i) =>
      layerFromJson(l, `${where}: contentLayer[${i}]`),
    ),
  };
}

/** A spec's protobuf-JSON form: fields at their defaults left out, int64 as a string, bytes as base64. */
export function specToJson(spec: ImageSpec): JsonObject {
  const out: JsonObject = {};
  if (spec.baseRef !== '') out.baseRef = spec.baseRef;
  if (spec.ideRef !== '') out.ideRef = spec.ideRef;
  if (spec.contentLayers.length > 0) {
    out.contentLayer = spec.contentLayers.map((l) => {
      if (l.kind === 'direct') {
        return {
          direct: l.content.byteLength > 0 ? { content: Buffer.from(l.content).toString('base64') } : {},
        };
      }
      const remote: JsonObject = {};
      if (l.url !== '') remote.url = l.url;
      if (l.digest !== '') remote.digest = l.digest;
      if (l.diffId !== '') remote.diffId = l.diffId;
      if (l.mediaType !== '') remote.mediaType = l.mediaType;
      if (l.size !== 0) remote.size = String(l.size);
      return { remote };
    });
  }
  if (spec.supervisorRef !== '') out.supervisorRef = spec.supervisorRef;
  if (spec.ideLayerRefs.length > 0) out.ideLayerRef = [...spec.ideLayerRefs];
  return out;
}

/** The protobuf-JSON form the facade's spec store and fixed-spec files keep specs in. */
export const imageSpecJson: SpecJsonCodec = { parse: specFromJson, format: specToJson };
