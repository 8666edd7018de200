// Chunk arithmetic and the chunk header, tested as pure functions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Dtype,
  HEADER_BYTES,
  Kind,
  MalformedChunk,
  Phase,
  blockSpans,
  bodyChecksum,
  chunkCount,
  chunkSpan,
  decodeHeader,
  elementsPerChunk,
  encodeHeader,
  runHash,
  segmentSpans,
  type ChunkHeader,
} from '../../src/transport/chunks.ts';

test('segments cover the vector exactly, in order, sizes differing by at most one', () => {
  for (const [n, w] of [[10, 3], [7, 2], [2, 3], [0, 2], [1_000_003, 3], [5, 1]]) {
    const spans = segmentSpans(n, w);
    assert.equal(spans.length, w);
    let at = 0;
    for (const s of spans) {
      assert.equal(s.offset, at);
      at += s.length;
    }
    assert.equal(at, n);
    const lens = spans.map((s) => s.length);
    assert.ok(Math.max(...lens) - Math.min(...lens) <= 1, `${n}/${w}: ${lens}`);
  }
  assert.deepEqual(segmentSpans(2, 3).map((s) => s.length), [1, 1, 0]);
});

test('segmentSpans refuses a negative length or an empty ring', () => {
  assert.throws(() => segmentSpans(-1, 2), /non-negative/);
  assert.throws(() => segmentSpans(4, 0), /world size/);
});

test('chunks fit max_payload with the header and tile each segment', () => {
  const per = elementsPerChunk(1024 * 1024, 4);
  assert.equal(per, (1024 * 1024 - HEADER_BYTES) >> 2);
  assert.ok(HEADER_BYTES + per * 4 <= 1024 * 1024);
  assert.equal(elementsPerChunk(1024 * 1024, 2, 1000), Math.floor((1000 - HEADER_BYTES) / 2));
  assert.throws(() => elementsPerChunk(HEADER_BYTES + 3, 4), /no room/);
  const span = { offset: 100, length: 25 };
  assert.equal(chunkCount(span.length, 10), 3);
  assert.equal(chunkCount(0, 10), 0);
  assert.deepEqual([0, 1, 2].map((c) => chunkSpan(span, c, 10)), [
    { offset: 100, length: 10 },
    { offset: 110, length: 10 },
    { offset: 120, length: 5 },
  ]);
  assert.throws(() => chunkSpan(span, 3, 10), /outside/);
  assert.deepEqual(blockSpans(4, 3), [{ offset: 0, length: 4 }, { offset: 4, length: 4 }, { offset: 8, length: 4 }]);
});

function header(over: Partial<ChunkHeader> = {}): ChunkHeader {
  return {
    kind: Kind.AllReduce, phase: Phase.AllGather, dtype: Dtype.F32, run: runHash('run-a'), generation: 7, step: 123456, seq: 2,
    flags: 1, from: 2, hop: 1, segment: 1, chunk: 3, chunks: 9, offset: 4_000_000, length: 3, total: 9_000_000, checksum: 0, ...over,
  };
}

function chunk(h: ChunkHeader, body: Float32Array): Uint8Array {
  const msg = new Uint8Array(HEADER_BYTES + body.byteLength);
  msg.set(new Uint8Array(body.buffer, body.byteOffset, body.byteLength), HEADER_BYTES);
  encodeHeader({ ...h, checksum: h.checksum || bodyChecksum(msg.subarray(HEADER_BYTES)) }, msg);
  return msg;
}

test('a header round-trips through its 56 bytes', () => {
  const msg = chunk(header(), new Float32Array([1, 2, 3]));
  const back = decodeHeader(msg, true);
  const { checksum, ...rest } = back;
  const { checksum: _c, ...want } = header();
  assert.deepEqual(rest, want);
  assert.ok(checksum > 0);
});

test('runHash tells run ids apart and is stable', () => {
  assert.equal(runHash('run-a'), runHash('run-a'));
  assert.notEqual(runHash('run-a'), runHash('run-b'));
  assert.equal(runHash(''), 0x811c9dc5);
});

test('malformed chunks are refused with a reason', () => {
  const good = chunk(header(), new Float32Array([1, 2, 3]));
  const reason = (m: Uint8Array) => {
    try {
      decodeHeader(m, true);
    } catch (e) {
      assert.ok(e instanceof MalformedChunk);
      return e.reason;
    }
    return 'accepted';
  };
  assert.equal(reason(good), 'accepted');
  assert.equal(reason(good.subarray(0, 20)), 'short');
  assert.equal(reason(good.subarray(0, good.length - 4)), 'size');
  const flipped = good.slice();
  flipped[HEADER_BYTES + 5] ^= 1;
  assert.equal(reason(flipped), 'checksum');
  const magic = good.slice();
  magic[0] = 0;
  assert.equal(reason(magic), 'magic');
  const version = good.slice();
  version[4] = 9;
  assert.equal(reason(version), 'version');
  const crc32Era = good.slice();
  crc32Era[4] = 1; // format 1 carried a CRC-32: a peer still on it is refused, not misread as a checksum error
  assert.equal(reason(crc32Era), 'version');
  const dtype = good.slice();
  dtype[7] = 7;
  assert.equal(reason(dtype), 'dtype');
  const kind = good.slice();
  kind[5] = 0;
  assert.equal(reason(kind), 'kind');
  const bf16 = chunk(header({ dtype: Dtype.BF16 }), new Float32Array([1, 2, 3]));
  assert.equal(reason(bf16), 'size'); // 12 body bytes are 6 bf16 elements, not 3
});

test('a header field that does not fit its slot is refused when encoding', () => {
  assert.throws(() => chunk(header({ from: 70_000 }), new Float32Array(1)), /from = 70000/);
  assert.throws(() => chunk(header({ step: -1 }), new Float32Array(1)), /step/);
});
