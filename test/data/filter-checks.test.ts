// The filter's checks one at a time, on real bytes: images made by sharp, captions as raw bytes, and the
// real language detector.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { FilterConfig } from '../../src/data/filter/config.ts';
import { checkCaption, decodeCaption } from '../../src/data/filter/caption.ts';
import { checkAspect, decodeImage } from '../../src/data/filter/image.ts';
import { checkJson, checkSample, type LanguageCheck } from '../../src/data/filter/sample.ts';
import { assertBalanced, emptyCounts } from '../../src/data/filter/stats.ts';
import { loadLanguageDetector } from '../../src/data/language.ts';
import * as img from '../fixtures/filter/images.ts';

const cfg = FilterConfig.parse({});
let language: LanguageCheck;
before(async () => {
  language = await loadLanguageDetector();
});

async function reasonFor(bytes: Buffer, ext = 'jpg', config = cfg): Promise<string> {
  const v = await checkSample(img.sample('000000000', { ext, bytes }, 'a photo of a dog running on the beach'), config, language);
  return v.keep ? 'kept' : v.reason;
}

describe('FilterConfig', () => {
  test('defaults follow DALL·E: English captions, aspect ratio within [0.5, 2]', () => {
    assert.equal(cfg.lang, 'en');
    assert.equal(cfg.minAspect, 0.5);
    assert.equal(cfg.maxAspect, 2);
    assert.equal(cfg.minCaptionChars, 5);
    assert.equal(cfg.maxPixels, 8192 * 8192);
    assert.ok(cfg.workers >= 2);
  });

  test('every field is described', () => {
    for (const [name, field] of Object.entries(FilterConfig.shape)) assert.ok(field.description, `${name} has a description`);
  });

  test('a bad setting is refused naming the field', () => {
    const bad = FilterConfig.safeParse({ minAspect: 3, maxAspect: 2 });
    assert.equal(bad.success, false);
    assert.deepEqual(bad.error?.issues[0]?.path, ['minAspect']);
    const lang = FilterConfig.safeParse({ lang: 'english' });
    assert.deepEqual(lang.error?.issues[0]?.path, ['lang']);
    const workers = FilterConfig.safeParse({ workers: Number('many') });
    assert.deepEqual(workers.error?.issues[0]?.path, ['workers']);
  });
});

describe('image check', () => {
  test('a plain JPEG decodes and reports its size', async () => {
    const r = await decodeImage(await img.jpeg(96, 64), cfg);
    assert.deepEqual(r, { ok: true, value: { width: 96, height: 64, format: 'jpeg' } });
  });

  test('filter drops a truncated JPEG as image', async () => {
    const r = await decodeImage(await img.truncatedJpeg(), cfg);
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.detail : '', /does not decode: .*premature end/i);
    assert.equal(await reasonFor(await img.truncatedJpeg()), 'image');
  });

  test('filter drops a JPEG with corrupted scan data as image', async () => {
    assert.equal(await reasonFor(await img.corruptJpeg()), 'image');
  });

  test('filter drops bytes that are not an image as image', async () => {
    const r = await decodeImage(img.notAnImage(), cfg);
    assert.match(!r.ok ? r.detail : '', /unsupported image format/);
    assert.equal(await reasonFor(img.notAnImage()), 'image');
  });

  test('filter drops a zero-byte image file as image', async () => {
    const r = await decodeImage(img.zeroBytes(), cfg);
    assert.deepEqual(r, { ok: false, reason: 'image', detail: 'image file is empty (0 bytes)' });
  });

  test('filter keeps a CMYK JPEG', async () => {
    const bytes = await img.cmykJpeg();
    assert.equal((await sharp(bytes).metadata()).space, 'cmyk', 'the fixture really is CMYK');
    assert.equal(await reasonFor(bytes), 'kept');
  });

  test('filter keeps a grayscale JPEG', async () => {
    const bytes = await img.grayscaleJpeg();
    assert.equal((await sharp(bytes).metadata()).channels, 1, 'the fixture really has one channel');
    assert.equal(await reasonFor(bytes), 'kept');
  });

  test('filter keeps a 16-bit PNG', async () => {
    const bytes = await img.png16();
    assert.equal((await sharp(bytes).metadata()).depth, 'ushort', 'the fixture really is 16-bit');
    assert.equal(await reasonFor(bytes, 'png'), 'kept');
  });

  test('filter keeps a PNG with an alpha channel', async () => {
    const bytes = await img.pngWithAlpha();
    assert.equal((await sharp(bytes).metadata()).hasAlpha, true, 'the fixture really has alpha');
    assert.equal(await reasonFor(bytes, 'png'), 'kept');
  });

  test('filter keeps a WebP image', async () => {
    const bytes = await img.webp();
    assert.equal((await sharp(bytes).metadata()).format, 'webp');
    assert.equal(await reasonFor(bytes, 'webp'), 'kept');
  });

  test('an EXIF-rotated JPEG is measured as displayed: width and height swap', async () => {
    const bytes = await img.exifRotatedJpeg(120, 80);
    const meta = await sharp(bytes).metadata();
    assert.deepEqual([meta.width, meta.height, meta.orientation], [120, 80, 6], 'stored landscape, orientation 6');
    const r = await decodeImage(bytes, cfg);
    assert.deepEqual(r, { ok: true, value: { width: 80, height: 120, format: 'jpeg' } });
    // Landscape-only settings: the stored 1.5 would pass, the displayed 0.67 must not.
    const landscape = FilterConfig.parse({ minAspect: 1, maxAspect: 2 });
    assert.equal(await reasonFor(bytes, 'jpg', landscape), 'aspect_ratio');
    assert.equal(await reasonFor(await img.jpeg(120, 80), 'jpg', landscape), 'kept');
  });

  test('a decompression bomb is refused under the pixel limit', async () => {
    const bytes = await img.bombPng();
    assert.ok(bytes.length < 100_000, `the bomb is small (${bytes.length} bytes)`);
    const limited = FilterConfig.parse({ maxPixels: 4_000_000 });
    const r = await decodeImage(bytes, limited);
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.detail : '', /3000×3000 = 9000000 pixels, over the 4000000 pixel limit/);
    assert.equal(await reasonFor(bytes, 'png', limited), 'image');
  });

  test('a PNG whose header claims 10 gigapixels is refused with the default limit', async () => {
    const r = await decodeImage(await img.hugeHeaderPng(), cfg);
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.detail : '', /100000×100000 .* over the 67108864 pixel limit/);
  });
});

describe('aspect ratio check', () => {
  test('both ends of [minAspect, maxAspect] are kept', () => {
    assert.equal(checkAspect({ width: 200, height: 100 }, cfg).ok, true);
    assert.equal(checkAspect({ width: 100, height: 200 }, cfg).ok, true);
    assert.equal(checkAspect({ width: 100, height: 100 }, cfg).ok, true);
  });

  test('just outside the range is dropped as aspect_ratio', () => {
    assert.deepEqual(checkAspect({ width: 201, height: 100 }, cfg), { ok: false, reason: 'aspect_ratio', detail: 'aspect ratio 201×100 = 2.010 is outside [0.5, 2]' });
    assert.equal(checkAspect({ width: 99, height: 200 }, cfg).ok, false);
  });

  test('filter measures the decoded image, not the .json', async () => {
    const wide = await img.jpeg(300, 100);
    const s = img.sample('000000001', { ext: 'jpg', bytes: wide }, 'a long panorama of a mountain range', JSON.stringify({ width: 100, height: 100 }));
    const v = await checkSample(s, cfg, language);
    assert.deepEqual(v.keep ? 'kept' : v.reason, 'aspect_ratio');
  });
});

describe('caption check', () => {
  test('filter drops a caption that is not UTF-8 as caption_encoding', () => {
    assert.deepEqual(decodeCaption(img.latin1Caption()), { ok: false, reason: 'caption_encoding', detail: 'caption bytes are not valid UTF-8' });
    assert.deepEqual(decodeCaption(Buffer.from('a café at night')), { ok: true, value: 'a café at night' });
  });

  test('filter drops a blank caption as caption', () => {
    assert.deepEqual(checkCaption(' \n\t ', cfg), { ok: false, reason: 'caption', detail: 'caption is blank' });
    assert.deepEqual(checkCaption('', cfg), { ok: false, reason: 'caption', detail: 'caption is blank' });
  });

  test('filter drops a caption shorter than the configured floor', () => {
    assert.equal(checkCaption('dog', cfg).ok, false);
    assert.deepEqual(checkCaption('  a dog  ', cfg), { ok: true, value: 'a dog' });
    const strict = FilterConfig.parse({ minCaptionChars: 10, minCaptionWords: 3 });
    assert.match(JSON.stringify(checkCaption('sunflowers', strict)), /1 words, fewer than 3/);
    assert.equal(checkCaption('two sunflowers blooming', strict).ok, true);
  });

  test('characters are counted as code points, not UTF-16 units', () => {
    assert.equal(checkCaption('🐶🐱🐭🐹', cfg).ok, false, '4 emoji are 4 characters, under 5');
  });
});

describe('sample verdict', () => {
  const photo = async () => ({ ext: 'jpg', bytes: await img.jpeg(96, 64) });

  test('filter keeps an English caption with a good image', async () => {
    const v = await checkSample(img.sample('000000002', await photo(), 'a red circle on a blue background'), cfg, language);
    assert.deepEqual(v, { keep: true });
  });

  test('filter drops a caption in German', async () => {
    const v = await checkSample(img.sample('000000003', await photo(), 'ein roter Kreis auf blauem Hintergrund'), cfg, language);
    assert.deepEqual(v, { keep: false, reason: 'language', detail: "caption is not in language 'en'" });
  });

  test('filter drops captions in French, Spanish and Russian, and keeps German with --lang de', async () => {
    for (const caption of ['un chat noir dort sur le canapé', 'un perro corriendo en la playa al atardecer', 'красный круг на синем фоне']) {
      const v = await checkSample(img.sample('000000004', await photo(), caption), cfg, language);
      assert.equal(v.keep ? 'kept' : v.reason, 'language', caption);
    }
    const de = FilterConfig.parse({ lang: 'de' });
    assert.deepEqual(await checkSample(img.sample('000000005', await photo(), 'ein roter Kreis auf blauem Hintergrund'), de, language), { keep: true });
  });

  test('filter drops a sample without an image as missing_image', async () => {
    const v = await checkSample(img.sample('000000006', undefined, 'a red circle'), cfg, language);
    assert.equal(v.keep ? 'kept' : v.reason, 'missing_image');
  });

  test('filter drops a sample without a caption as missing_caption', async () => {
    const v = await checkSample(img.sample('000000007', await photo(), undefined), cfg, language);
    assert.equal(v.keep ? 'kept' : v.reason, 'missing_caption');
  });

  test('filter drops a sample whose .json is broken as json', async () => {
    const v = await checkSample(img.sample('000000008', await photo(), 'a red circle on a blue background', '{"url": "http://exa'), cfg, language);
    assert.equal(v.keep ? 'kept' : v.reason, 'json');
    assert.equal(checkJson(Buffer.from('[1, 2]')).keep, false, 'an array is not img2dataset metadata');
    assert.equal(checkJson(Buffer.from('null')).keep, false);
    assert.equal(checkJson(Buffer.from([0x7b, 0xff, 0x7d])).keep, false, 'not UTF-8');
    assert.deepEqual(checkJson(Buffer.from('{"caption": "x"}')), { keep: true });
  });

  test('a sample without a .json is judged on its image and caption alone', async () => {
    const s = img.sample('000000009', await photo(), 'a red circle on a blue background');
    delete s.json;
    assert.deepEqual(await checkSample(s, cfg, language), { keep: true });
  });

  test('the first failing check names the reason: a German caption on a broken image counts as language', async () => {
    const v = await checkSample(img.sample('000000010', { ext: 'jpg', bytes: img.notAnImage() }, 'ein roter Kreis auf blauem Hintergrund'), cfg, language);
    assert.equal(v.keep ? 'kept' : v.reason, 'language');
  });
});

describe('stats', () => {
  test('assertBalanced refuses counts where input ≠ kept + dropped', () => {
    const c = emptyCounts();
    c.input = 3;
    c.kept = 1;
    c.dropped.language = 2;
    assertBalanced(c, 'ok');
    c.dropped.image = 1;
    assert.throws(() => assertBalanced(c, 'shard 00000.tar'), /shard 00000.tar: input 3 ≠ kept 1 \+ dropped 3/);
  });
});
