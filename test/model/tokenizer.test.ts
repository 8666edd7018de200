import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend } from '../../src/model/backend.ts';
import { BOS, EOS, PAD, Tokenizer, VOCAB_SIZE, decode, encode, tokenize } from '../../src/model/tokenizer.ts';

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

// Learnt byte-level BPE. Captions in the style of the synthetic shapes data: every word is frequent.
const COLORS = ['red', 'green', 'blue', 'yellow', 'white', 'black'];
const SHAPES = ['circle', 'square', 'triangle'];
const CAPTIONS = COLORS.flatMap((color) => SHAPES.flatMap((shape) => ['white', 'black'].map((bg) => `a ${color} ${shape} on a ${bg} background`)));

/** The text of each token between BOS and EOS. */
function pieces(tok: Tokenizer, text: string): string[] {
  const ids = Array.from(tok.encode(text, 256));
  return ids.slice(1, ids.indexOf(EOS)).map((id) => tok.decode([id]));
}

/** The byte tokenizer as it was before BPE, written out plainly: BOS, the UTF-8 bytes cut at a whole character, EOS, PAD. */
function byteReference(text: string, ctx: number): Int32Array {
  const bytes = new TextEncoder().encode(text);
  let n = Math.min(bytes.length, ctx - 2);
  while (n < bytes.length && n > 0 && (bytes[n] & 0xc0) === 0x80) n--;
  return Int32Array.from([BOS, ...bytes.subarray(0, n), EOS, ...new Array(ctx - n - 2).fill(PAD)]);
}

test('the byte tokenizer is the zero-merge tokenizer, with the ids checkpoints before BPE were trained on', () => {
  assert.equal(Tokenizer.BYTES.vocabSize, VOCAB_SIZE);
  assert.deepEqual(Tokenizer.BYTES.merges, []);
  for (const text of ['a red circle', 'crème brûlée', '红色的三角形', '🟥 x', '  two  spaces ', 'tab\tand\nnewline', '']) {
    for (const ctx of [2, 5, 9, 64]) {
      const ids = Tokenizer.BYTES.encode(text, ctx);
      assert.deepEqual(ids, byteReference(text, ctx), `${JSON.stringify(text)} at ${ctx}`);
      assert.deepEqual(encode(text, ctx), ids);
      assert.deepEqual(new Tokenizer().encode(text, ctx), ids);
      assert.equal(Tokenizer.BYTES.decode(ids), decode(ids));
    }
  }
});

test('learnt merges make frequent words single tokens, a leading space included', () => {
  const tok = Tokenizer.learn(CAPTIONS, 200);
  assert.deepEqual(pieces(tok, 'a red circle on a white background'), ['a', ' red', ' circle', ' on', ' a', ' white', ' background']);
  assert.deepEqual(pieces(tok, 'a blue square on a black background'), ['a', ' blue', ' square', ' on', ' a', ' black', ' background']);
  // Merges never cross pieces, so learning stops once every word is one token: fewer merges than asked for.
  assert.ok(tok.merges.length < 200);
  assert.equal(tok.vocabSize, VOCAB_SIZE + tok.merges.length);
});

test('learning is deterministic, whatever the order of the texts', () => {
  const a = Tokenizer.learn(CAPTIONS, 50);
  assert.equal(a.merges.length, 50);
  assert.deepEqual(Tokenizer.learn(CAPTIONS, 50).merges, a.merges);
  assert.deepEqual(Tokenizer.learn([...CAPTIONS].reverse(), 50).merges, a.merges);
  // A prefix of the merges is what fewer merges learn.
  assert.deepEqual(Tokenizer.learn(CAPTIONS, 20).merges, a.merges.slice(0, 20));
});

test('a tie between pairs goes to the smaller first id, then the smaller second id', () => {
  assert.deepEqual(Tokenizer.learn(['cd', 'ab', 'cd', 'ab'], 1).merges, [[97, 98]]);
  assert.deepEqual(Tokenizer.learn(['ac', 'ab', 'ac', 'ab'], 1).merges, [[97, 98]]);
  assert.deepEqual(Tokenizer.learn(['cd', 'ac', 'cd', 'ac', 'ab', 'ab'], 3).merges, [[97, 98], [97, 99], [99, 100]]);
});

test('learning stops when no pair occurs twice', () => {
  assert.deepEqual(Tokenizer.learn(['abc'], 10).merges, []);
  assert.deepEqual(Tokenizer.learn(['abab'], 10).merges, [[97, 98]]);
  assert.deepEqual(Tokenizer.learn([], 10).merges, []);
  assert.throws(() => Tokenizer.learn(['ab'], -1), /merges must be an integer/);
});

test('encoding applies the earliest-learnt merge first, as it was learnt', () => {
  // "abc" with "bc" learnt before "ab": bc wins even though ab comes first in the text.
  assert.deepEqual(pieces(new Tokenizer([[98, 99], [97, 98]]), 'abc'), ['a', 'bc']);
  assert.deepEqual(pieces(new Tokenizer([[97, 98], [98, 99]]), 'abc'), ['ab', 'c']);
  // A merge of merges: id 260 joins 259 ("ab") with itself.
  const tok = new Tokenizer([[97, 98], [259, 259]]);
  assert.deepEqual(Array.from(tok.encode('ababab', 6)), [BOS, 260, 259, EOS, PAD, PAD]);
});

test('a learnt tokenizer round-trips any UTF-8 text, and bytes never seen still encode', () => {
  const tok = Tokenizer.learn([...CAPTIONS, 'crème brûlée', '红色的三角形', '红色的圆形', '🟥🔺 🟥🔺'], 300);
  for (const text of [...CAPTIONS, 'A Red Circle, 3 of them!', 'crème brûlée', '红色的三角形', '🟥🔺👩‍👩‍👧', 'two  spaces\tand\na\u0000nul', ' ', '']) {
    const ids = tok.encode(text, 128);
    assert.equal(tok.decode(ids), text);
    assert.ok(ids.every((id) => id >= 0 && id < tok.vocabSize));
  }
  // "€" and "ß" are nowhere in the texts learnt from: they stay their bytes.
  assert.deepEqual(Array.from(tok.encode('€ß', 8)), [BOS, 0xe2, 0x82, 0xac, 0xc3, 0x9f, EOS, PAD]);
});

test('a learnt tokenizer cuts a long text between characters and still ends in EOS', () => {
  // A merged token that starts mid-character ("红" is e7 ba a2; the merge makes "ba a2" one token): a cut before
  // it would split the character, so the whole character goes.
  const mid = new Tokenizer([[0xba, 0xa2]]);
  assert.deepEqual(Array.from(mid.encode('红', 4)), [BOS, 0xe7, VOCAB_SIZE, EOS]);
  assert.deepEqual(Array.from(mid.encode('红', 3)), [BOS, EOS, PAD]);
  const tok = Tokenizer.learn(['naïve 红色 🟥 x', '红色的三角形', 'naïve 红色 🟥 x'], 40);
  const text = 'naïve 红色 🟥 x naïve 红色的三角形';
  for (let ctx = 2; ctx < 40; ctx++) {
    const ids = tok.encode(text, ctx);
    assert.equal(ids.length, ctx);
    const end = ids.indexOf(EOS);
    assert.ok(end > 0 && ids.subarray(end + 1).every((id) => id === PAD), `ctx ${ctx}: EOS then padding`);
    const decoded = tok.decode(ids);
    assert.ok(text.startsWith(decoded), `ctx ${ctx}: '${decoded}' is not a prefix`);
    assert.ok(!decoded.includes('\ufffd'));
  }
  assert.throws(() => tok.encode('x', 1), /context length must be an integer ≥ 2/);
});

test('a tokenizer survives JSON: same merges, same encodings', () => {
  const tok = Tokenizer.learn(CAPTIONS, 60);
  const json = tok.toJson();
  assert.equal(json.format, 'easel-bpe/1');
  const back = Tokenizer.fromJson(JSON.parse(JSON.stringify(json)), 'tokenizer.json');
  assert.deepEqual(back.merges, tok.merges);
  assert.equal(back.vocabSize, tok.vocabSize);
  for (const text of [...CAPTIONS, 'crème 红 🟥']) assert.deepEqual(back.encode(text, 48), tok.encode(text, 48));
});

test('a malformed tokenizer file is rejected, naming the file and the field', () => {
  const merges = [[97, 98], [259, 99], [900, 97]];
  assert.throws(() => Tokenizer.fromJson({ format: 'easel-bpe/1', merges }, 'run/tokenizer.json'), /run\/tokenizer\.json[\s\S]*merges\.2: id 900 is not defined before merge 2/);
  assert.throws(() => Tokenizer.fromJson({ format: 'easel-bpe/1', merges: [[97, 98], [98, 259], [98, 261]] }, 'x'), /merges\.2: id 261 is not defined before merge 2/);
  assert.throws(() => Tokenizer.fromJson({ format: 'easel-bpe/1', merges: [[EOS, 97]] }, 'x'), /merges\.0: id 257 is a special token/);
  assert.throws(() => Tokenizer.fromJson({ format: 'easel-bpe/1', merges: [[97, 98], [97, 98]] }, 'x'), /merges\.1: pair \[97, 98\] is already merge 0/);
  assert.throws(() => Tokenizer.fromJson({ format: 'easel-bpe/1', merges: [[97, 1.5]] }, 'x'), /merges\.0\.1/);
  assert.throws(() => Tokenizer.fromJson({ format: 'gpt2', merges: [] }, 'vocab.json'), /vocab\.json[\s\S]*format:/);
  assert.throws(() => Tokenizer.fromJson(null, 'x'), /invalid tokenizer in x/);
  assert.throws(() => new Tokenizer([[97, 300]]), /merges\.0: id 300 is not defined before merge 0/);
});

test('a learnt tokenizer stacks rows into an int32 [B, ctx] tensor', () => {
  const tok = Tokenizer.learn(CAPTIONS, 100);
  const t = tok.tokenize(['a red circle', '红', ''], 8);
  assert.deepEqual(t.shape, [3, 8]);
  assert.equal(t.dtype, 'int32');
  const rows = t.arraySync();
  assert.deepEqual(rows[0], Array.from(tok.encode('a red circle', 8)));
  assert.deepEqual(rows[0].slice(0, 5), [BOS, 97, tok.encode(' red', 3)[1], tok.encode(' circle', 3)[1], EOS]);
  assert.equal(tok.decode(rows[1]), '红');
  t.dispose();
});
