import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend } from '../../src/model/backend.ts';
import { BOS, EOS, PAD, VOCAB_SIZE, decode, encode, tokenize } from '../../src/model/tokenizer.ts';

before(async () => {
  await initBackend();
});

test('a caption encodes to BOS, its UTF-8 bytes, EOS, then padding', () => {
  const ids = encode('a red', 10);
  assert.deepEqual(Array.from(ids), [BOS, 97, 32, 114, 101, 100, EOS, PAD, PAD, PAD]);
  assert.equal(VOCAB_SIZE, 259);
});

test('any UTF-8 text round-trips: accents, CJK, emoji, control bytes, empty', () => {
  for (const text of ['a green triangle on a white background', 'crème brûlée', '红色的三角形', '🟥🔺👩‍👩‍👧', 'tab\there\u0000nul', '']) {
    const ids = encode(text, 64);
    assert.equal(ids.length, 64);
    assert.equal(decode(ids), text);
    assert.equal(ids.filter((id) => id === EOS).length, 1);
    assert.ok(ids.every((id) => id >= 0 && id < VOCAB_SIZE));
  }
});

test('a text too long is cut at a whole character and still ends in EOS', () => {
  const ascii = encode('abcdefghij', 6);
  assert.deepEqual(Array.from(ascii), [BOS, 97, 98, 99, 100, EOS]);
  // "红" is 3 bytes: 5 content slots hold one whole character, never a partial second one.
  const cjk = encode('红色的', 7);
  assert.deepEqual(Array.from(cjk), [BOS, 0xe7, 0xba, 0xa2, EOS, PAD, PAD]);
  assert.equal(decode(cjk), '红');
  // A 4-byte emoji in 3 slots: nothing fits, and the row is still BOS, EOS.
  assert.deepEqual(Array.from(encode('🟥', 5)), [BOS, EOS, PAD, PAD, PAD]);
  for (let ctx = 2; ctx < 40; ctx++) {
    const text = 'naïve 红 🟥 x';
    const decoded = decode(encode(text, ctx));
    assert.ok(text.startsWith(decoded), `ctx ${ctx}: '${decoded}' is not a prefix`);
    assert.ok(!decoded.includes('\ufffd'));
  }
});

test('the context length must leave room for BOS and EOS', () => {
  assert.throws(() => encode('x', 1), /context length must be an integer ≥ 2/);
  assert.throws(() => encode('x', 3.5), /context length/);
});

test('tokenize stacks rows into an int32 [B, ctx] tensor', () => {
  const t = tokenize(['red', '红'], 8);
  assert.deepEqual(t.shape, [2, 8]);
  assert.equal(t.dtype, 'int32');
  const rows = t.arraySync();
  assert.deepEqual(rows[0], Array.from(encode('red', 8)));
  assert.equal(decode(rows[1]), '红');
  t.dispose();
  assert.deepEqual(tokenize([], 4).shape, [0, 4]);
});
