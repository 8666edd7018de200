import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadLanguageDetector, UNDETERMINED } from '../../src/data/language.ts';
import { readLangidSet, scoreEnglish, wordCount } from '../fixtures/langid/set.ts';

const set = readLangidSet();
const heldOut = set.filter((it) => it.half === 'test');

test('loading the detector twice shares one set of models', async () => {
  assert.equal(await loadLanguageDetector(), await loadLanguageDetector());
});

test('English detection meets the bar on the held-out half of the labelled set: precision ≥ 0.99, recall ≥ 0.97', async () => {
  const d = await loadLanguageDetector();
  const s = scoreEnglish(heldOut, (i) => d.is(heldOut[i].text, 'en'));
  assert.ok(heldOut.length > 2000 && s.truePositives + s.falseNegatives > 700, 'the held-out half is the committed set, not a sample');
  assert.ok(s.precision >= 0.99, `precision ${s.precision.toFixed(4)} (${s.falsePositives} false positives)`);
  assert.ok(s.recall >= 0.97, `recall ${s.recall.toFixed(4)} (${s.falseNegatives} English texts missed)`);
});

test('English captions of one to five words are kept (recall ≥ 0.95 on the held-out half)', async () => {
  const d = await loadLanguageDetector();
  const short = heldOut.filter((it) => it.lang === 'en' && wordCount(it.text) <= 5);
  const kept = short.filter((it) => d.is(it.text, 'en')).length;
  assert.ok(short.length > 200);
  assert.ok(kept / short.length >= 0.95, `kept ${kept} of ${short.length}`);
});

for (const lang of ['de', 'fr', 'es', 'it', 'pt', 'nl', 'ru', 'ja']) {
  test(`filter drops captions in ${lang}: at most 2% of the set's ${lang} texts pass as English`, async () => {
    const d = await loadLanguageDetector();
    const texts = set.filter((it) => it.lang === lang).map((it) => it.text);
    const passed = texts.filter((t) => d.is(t, 'en'));
    assert.ok(texts.length >= 100);
    assert.ok(passed.length <= 0.02 * texts.length, `passed as English: ${JSON.stringify(passed)}`);
  });
}

test('detect names the language of real texts from the set and says how sure it is', async () => {
  const d = await loadLanguageDetector();
  const pick = (lang: string) => set.find((it) => it.lang === lang && wordCount(it.text) >= 6)!.text;
  for (const lang of ['en', 'de', 'fr', 'es', 'ru', 'zh']) {
    const r = d.detect(pick(lang));
    assert.equal(r.lang, lang, pick(lang));
    assert.ok(r.confidence > 0 && r.confidence <= 1, `confidence ${r.confidence}`);
  }
  assert.ok(d.is(pick('de'), 'de'));
  assert.ok(d.is(pick('en'), 'EN'), 'language codes are case-insensitive');
});

test('is(text, lang) agrees with detect(text) on every held-out text, for English and for the text\'s own language', async () => {
  const d = await loadLanguageDetector();
  const asDetected = (lang: string) => (lang === 'nb' ? 'no' : lang); // the detectors call Norwegian Bokmål 'no'
  for (const it of heldOut) {
    const said = d.detect(it.text).lang;
    for (const lang of ['en', it.lang]) assert.equal(d.is(it.text, lang), said === asDetected(lang), `${lang}: ${it.text}`);
  }
});

test('text without letters is undetermined, never English', async () => {
  const d = await loadLanguageDetector();
  for (const t of ['', '   ', '\n\t', '12345', '3.14 + 2 = 5.14', '🎉🐶🌈', '!!! ???', '\u0000\u0007']) {
    assert.deepEqual(d.detect(t), { lang: UNDETERMINED, confidence: 0 }, JSON.stringify(t));
    assert.equal(d.is(t, 'en'), false, JSON.stringify(t));
  }
});

test('mixed scripts, emoji, newlines, lone surrogates and very long text are answered without throwing', async () => {
  const d = await loadLanguageDetector();
  const odd = [
    'a photo of Tokyo tower 東京タワー at night',
    'Москва city skyline at sunset',
    '🐶 a dog playing in the snow 🎉',
    'a red circle\non a blue\r\nbackground',
    'broken \ud800 surrogate in a caption',
    'x',
    'the '.repeat(5000),
  ];
  for (const t of odd) {
    const r = d.detect(t);
    assert.equal(typeof r.lang, 'string');
    assert.ok(r.confidence >= 0 && r.confidence <= 1);
    assert.equal(typeof d.is(t, 'en'), 'boolean');
  }
  assert.ok(d.is('🐶 a dog playing in the snow 🎉', 'en'), 'emoji around an English caption do not hide it');
  assert.ok(d.is('a red circle\non a blue\r\nbackground', 'en'), 'a newline does not cut the caption short');
});
