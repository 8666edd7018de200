// The safetensors format (huggingface/safetensors), pure encode/decode with no tfjs in sight:
//   8 bytes  little-endian u64 N = header length
//   N bytes  UTF-8 JSON: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
//   rest     the byte buffer; offsets are relative to its start, tensors little-endian, no holes, no overlaps.
// The header is padded with spaces so the byte buffer starts 8-byte aligned, as the reference writer does.
// Tensors keep the order they were given in (callers pass a model's params() order).

export type Dtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const BYTES: Record<Dtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** Typed view per dtype; 16-bit floats travel as their raw bits (Uint16Array). */
export type TensorData = Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

export interface SafeTensor {
  dtype: Dtype;
  shape: number[];
  data: TensorData;
}

export interface Safetensors {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
}

/** The reference implementation refuses headers over 100 MB; so do we (a corrupt length would otherwise allocate). */
const MAX_HEADER = 100_000_000;

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  throw new Error('safetensors: this module assumes a little-endian host');
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function viewFor(dtype: Dtype, bytes: Uint8Array): TensorData {
  // Copy into a fresh, aligned buffer: the slice of a file is rarely aligned for the element type
  // (and Buffer#slice would not copy).
  const buf = new Uint8Array(bytes).buffer;
  switch (dtype) {
    case 'F64': return new Float64Array(buf);
    case 'F32': return new Float32Array(buf);
    case 'F16':
    case 'BF16': return new Uint16Array(buf);
    case 'I64': return new BigInt64Array(buf);
    case 'I32': return new Int32Array(buf);
    case 'I16': return new Int16Array(buf);
    case 'I8': return new Int8Array(buf);
    case 'U8':
    case 'BOOL': return new Uint8Array(buf);
  }
}

/** Serialises tensors (in the given order) and string metadata into one safetensors file. */
export function encodeSafetensors(
  tensors: Iterable<[string, SafeTensor]>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === '__metadata__') throw new Error('safetensors: a tensor cannot be named __metadata__');
    if (name in header) throw new Error(`safetensors: duplicate tensor name ${name}`);
    const size = numel(t.shape) * BYTES[t.dtype];
    if (t.data.byteLength !== size) {
      throw new Error(`safetensors: tensor ${name} has ${t.data.byteLength} bytes but ${t.dtype}${JSON.stringify(t.shape)} needs ${size}`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    parts.push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    offset += size;
  }
  let json = JSON.stringify(header);
  const jsonBytes = new TextEncoder().encode(json);
  const padded = Math.ceil((8 + jsonBytes.length) / 8) * 8 - 8;
  json += ' '.repeat(padded - jsonBytes.length);
  const headerBytes = new TextEncoder().encode(json);

  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Parses a safetensors file; throws naming the offending tensor on any inconsistency. */
export function decodeSafetensors(bytes: Uint8Array): Safetensors {
  if (bytes.length < 8) throw new Error(`safetensors: file too short (${bytes.length} bytes)`);
  const n = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER)) throw new Error(`safetensors: header length ${n} exceeds ${MAX_HEADER}`);
  const headerLen = Number(n);
  if (8 + headerLen > bytes.length) throw new Error(`safetensors: header length ${headerLen} runs past the end of the file`);
  const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen));
  if (!text.startsWith('{')) throw new Error('safetensors: header is not a JSON object');
  let header: Record<string, any>;
  try {
    header = JSON.parse(text);
  } catch (err) {
    throw new Error(`safetensors: header is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const data = bytes.subarray(8 + headerLen);
  const metadata: Record<string, string> = header.__metadata__ ?? {};
  const entries = Object.entries(header).filter(([k]) => k !== '__metadata__');

  const spans: [number, number, string][] = [];
  const tensors = new Map<string, SafeTensor>();
  for (const [name, info] of entries) {
    const dtype = info?.dtype as Dtype;
    if (!(dtype in BYTES)) throw new Error(`safetensors: tensor ${name} has unknown dtype ${JSON.stringify(info?.dtype)}`);
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d: unknown) => Number.isInteger(d) && (d as number) >= 0)) {
      throw new Error(`safetensors: tensor ${name} has an invalid shape ${JSON.stringify(shape)}`);
    }
    const [begin, end] = info.data_offsets ?? [];
    if (!Number.isInteger(begin) || !Number.isInteger(end) || begin < 0 || end < begin || end > data.length) {
      throw new Error(`safetensors: tensor ${name} has invalid data_offsets ${JSON.stringify(info.data_offsets)}`);
    }
    if (end - begin !== numel(shape) * BYTES[dtype]) {
      throw new Error(`safetensors: tensor ${name} spans ${end - begin} bytes but ${dtype}${JSON.stringify(shape)} needs ${numel(shape) * BYTES[dtype]}`);
    }
    spans.push([begin, end, name]);
    tensors.set(name, { dtype, shape, data: viewFor(dtype, data.subarray(begin, end)) });
  }
  // The byte buffer must be covered exactly: no holes, no overlaps (the reference reader's rule).
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let covered = 0;
  for (const [begin, end, name] of spans) {
    if (begin !== covered) throw new Error(`safetensors: tensor ${name} starts at ${begin}, expected ${covered} (hole or overlap)`);
    covered = end;
  }
  if (covered !== data.length) throw new Error(`safetensors: ${data.length - covered} trailing bytes after the last tensor`);
  return { tensors, metadata };
}
