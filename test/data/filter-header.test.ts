// The filter reads JPEG and PNG sizes from their headers (src/data/filter/header.ts) instead of asking sharp:
// checked here against sharp's own `autoOrient` metadata on real encoded bytes, every EXIF orientation included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { headerSize } from '../../src/data/filter/header.ts';
import { decodeImage, thumbnailFits } from '../../src/data/filter/image.ts';

const canvas = (width: number, height: number) => sharp({ create: { width, height, channels: 3, background: { r: 200, g: 30, b: 30 } } });

async function sharpSize(bytes: Buffer) {
  const m = await sharp(bytes, { autoOrient: true }).metadata();
  return { width: m.autoOrient.width, height: m.autoOrient.height, format: m.format };
}

test('JPEG: baseline and progressive, with every EXIF orientation, as sharp measures them displayed', async () => {
  for (const progressive of [false, true]) {
    for (let orientation = 1; orientation <= 8; orientation++) {
      const bytes = await canvas(37, 91).jpeg({ progressive }).withMetadata({ orientation }).toBuffer();
      const expected = await sharpSize(bytes);
      assert.deepEqual(headerSize(bytes), expected, `orientation ${orientation}, progressive ${progressive}`);
      assert.deepEqual(expected, orientation >= 5 ? { width: 91, height: 37, format: 'jpeg' } : { width: 37, height: 91, format: 'jpeg' });
    }
  }
  // Without any EXIF at all.
  const plain = await canvas(300, 7).jpeg().toBuffer();
  assert.deepEqual(headerSize(plain), { width: 300, height: 7, format: 'jpeg' });
});

test('PNG: the IHDR size; a PNG carrying EXIF is left to sharp', async () => {
  const png = await canvas(50, 20).png().toBuffer();
  assert.deepEqual(headerSize(png), await sharpSize(png));
  const withExif = await canvas(50, 20).png().withMetadata({ orientation: 6 }).toBuffer();
  assert.ok(withExif.includes(Buffer.from('eXIf')), 'sharp wrote the orientation into an eXIf chunk');
  assert.equal(headerSize(withExif), undefined);
  // …and the filter, asking sharp, measures it as displayed.
  assert.deepEqual(await decodeImage(withExif, { maxPixels: 1e8 }), { ok: true, value: { width: 20, height: 50, format: 'png' } });
});

test('other formats, truncated headers and garbage give undefined, never a wrong size or an exception', async () => {
  assert.equal(headerSize(await canvas(10, 10).webp().toBuffer()), undefined);
  assert.equal(headerSize(await canvas(10, 10).gif().toBuffer()), undefined);
  const jpeg = await canvas(40, 30).jpeg().withMetadata({ orientation: 6 }).toBuffer();
  const sof = jpeg.findIndex((b, i) => b === 0xff && jpeg[i + 1] === 0xc0);
  for (const cut of [0, 1, 3, 4, 10, 20, sof, sof + 5]) assert.equal(headerSize(jpeg.subarray(0, cut)), undefined, `first ${cut} bytes`);
  assert.equal(headerSize(new Uint8Array(0)), undefined);
  assert.equal(headerSize(Buffer.from('\xff\xd8not a jpeg at all', 'latin1')), undefined);
  assert.equal(headerSize(Buffer.from('hello')), undefined);
  // A corrupted orientation value (outside 1–8) is not guessed at.
  const bad = Buffer.from(jpeg);
  const tag = bad.findIndex((b, i) => (b === 0x12 && bad[i + 1] === 0x01) || (b === 0x01 && bad[i + 1] === 0x12));
  bad[tag + 8] = bad[tag + 9] = 0x63;
  assert.equal(headerSize(bad), undefined);
});

test('thumbnailFits: a 32-px inside thumbnail matches its source size within a pixel, and nothing else', () => {
  assert.equal(thumbnailFits({ width: 256, height: 128 }, { width: 32, height: 16 }), true);
  assert.equal(thumbnailFits({ width: 37, height: 91 }, { width: 13, height: 32 }), true); // 13.01
  assert.equal(thumbnailFits({ width: 91, height: 37 }, { width: 13, height: 32 }), false); // orientation got wrong
  assert.equal(thumbnailFits({ width: 256, height: 128 }, { width: 32, height: 24 }), false);
});
