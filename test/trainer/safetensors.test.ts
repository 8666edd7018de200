import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeSafetensors, encodeSafetensors, type SafeTensor } from '../../src/trainer/safetensors.ts';

test('tensors and metadata survive a round trip, in their original order', () => {
  const tensors: [string, SafeTensor][] = [
    ['visual.proj.w', { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, -2.5, 3e-8, NaN, Infinity, -0]) }],
    ['step', { dtype: 'I32', shape: [], data: new Int32Array([-7]) }],
    ['mask', { dtype: 'U8', shape: [3], data: new Uint8Array([1, 0, 1]) }],
    ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
    ['double', { dtype: 'F64', shape: [1], data: new Float64Array([Math.PI]) }],
  ];
  const bytes = encodeSafetensors(tensors, { format: 'pt', note: 'ünïcode' });
  const back = decodeSafetensors(bytes);
  assert.deepEqual([...back.tensors.keys()], tensors.map(([n]) => n));
  assert.deepEqual(back.metadata, { format: 'pt', note: 'ünïcode' });
  for (const [name, t] of tensors) {
    const got = back.tensors.get(name)!;
    assert.equal(got.dtype, t.dtype, name);
    assert.deepEqual(got.shape, t.shape, name);
    assert.deepEqual(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength), Buffer.from(t.data.buffer), name);
  }
});

test('the bytes follow the spec: u64 LE header length, JSON header, 8-byte aligned little-endian data', () => {
  const bytes = encodeSafetensors([
    ['a', { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) }],
    ['b', { dtype: 'I32', shape: [1], data: new Int32Array([258]) }],
  ]);
  const json = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}}';
  const padded = json + ' '.repeat(((8 + json.length + 7) & ~7) - 8 - json.length);
  const expected = Buffer.concat([
    Buffer.from([padded.length, 0, 0, 0, 0, 0, 0, 0]),
    Buffer.from(padded),
    Buffer.from([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40]), // 1.0f, 2.0f little-endian
    Buffer.from([0x02, 0x01, 0x00, 0x00]), // 258 little-endian
  ]);
  assert.deepEqual(Buffer.from(bytes), expected);
  assert.equal((8 + padded.length) % 8, 0);
});

test('a file with an unpadded header (as older writers produce) decodes', () => {
  const header = '{"x":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}';
  const file = Buffer.concat([
    Buffer.from(new BigUint64Array([BigInt(header.length)]).buffer),
    Buffer.from(header),
    Buffer.from(new Float32Array([0.5, -1]).buffer),
  ]);
  const { tensors } = decodeSafetensors(file);
  assert.deepEqual([...(tensors.get('x')!.data as Float32Array)], [0.5, -1]);
  assert.deepEqual(tensors.get('x')!.shape, [1, 2]);
});

function fileWith(header: object, dataBytes: number): Buffer {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, Buffer.alloc(dataBytes)]);
}

test('a corrupt file is rejected with an error naming the tensor', () => {
  assert.throws(() => decodeSafetensors(Buffer.alloc(4)), /too short/);
  const huge = Buffer.alloc(16);
  huge.writeBigUInt64LE(1n << 40n);
  assert.throws(() => decodeSafetensors(huge), /exceeds/);
  assert.throws(() => decodeSafetensors(fileWith({ w: { dtype: 'Q7', shape: [1], data_offsets: [0, 4] } }, 4)), /tensor w has unknown dtype/);
  assert.throws(() => decodeSafetensors(fileWith({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4)), /tensor w spans 4 bytes/);
  assert.throws(() => decodeSafetensors(fileWith({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 8] } }, 4)), /tensor w has invalid data_offsets/);
  assert.throws(
    () => decodeSafetensors(fileWith({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, 12)),
    /tensor b starts at 8, expected 4/,
  );
  assert.throws(() => decodeSafetensors(fileWith({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 8)), /4 trailing bytes/);
});

test('encoding refuses data whose size does not match its shape', () => {
  assert.throws(() => encodeSafetensors([['w', { dtype: 'F32', shape: [3], data: new Float32Array(2) }]]), /tensor w has 8 bytes/);
});
