import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fitsCaption, meanCosine, rankedImages, retrievalTop1, retrievalTopK, retrievedImages, scoreDecoder } from '../../src/eval/evaluate.ts';
import { BACKGROUND_RGB, drawSpec, rasterize, type GroundTruth } from '../../src/data/synth/index.ts';
import { analyseShape } from '../../src/eval/shape-analyser.ts';
import { Rng } from '../../src/util/rng.ts';

const truth: GroundTruth = { shape: 'triangle', color: 'green', background: 'gray', size: 'small', width: 32, height: 32, cx: 16, cy: 16, extent: 10, split: 'eval', lang: 'en' };

test('a retrieved image is a hit only when it has every attribute the caption names', () => {
  assert.ok(fitsCaption('a small green triangle against a plain gray backdrop', truth));
  assert.ok(fitsCaption('A simple drawing of a green triangle.', truth));
  assert.ok(!fitsCaption('a medium green triangle', truth));
  assert.ok(!fitsCaption('a green triangle on a white background', truth));
  assert.ok(!fitsCaption('a yellow triangle', truth));
  assert.ok(!fitsCaption('a green square', truth));
});

test('the colour–shape criterion ignores background and size', () => {
  assert.ok(fitsCaption('a large green triangle on a white background', truth, 'color-shape'));
  assert.ok(!fitsCaption('a large yellow triangle on a gray background', truth, 'color-shape'));
});

test('decoder scores: overall and per colour–shape pair, with blank canvases counted apart', () => {
  const rng = new Rng(3);
  const read = (pixels: Uint8Array) => analyseShape(pixels, 32, 32);
  const render = (color: 'green' | 'yellow', shape: 'triangle' | 'square') => read(rasterize(drawSpec(rng, { color, shape }, 32, 32)));
  const blank = read(new Uint8Array(32 * 32 * 3).fill(BACKGROUND_RGB.white[0]));
  const greenTriangle = { color: 'green', shape: 'triangle' } as const;
  const yellowSquare = { color: 'yellow', shape: 'square' } as const;
  const r = scoreDecoder([
    { truth: greenTriangle, reading: render('green', 'triangle') }, // right
    { truth: greenTriangle, reading: render('green', 'square') }, // right colour, wrong shape
    { truth: greenTriangle, reading: blank }, // nothing drawn
    { truth: yellowSquare, reading: render('yellow', 'square') }, // right
  ]);
  assert.equal(blank.coverage, 0);
  assert.deepEqual(r.by_pair, {
    'green triangle': { color_accuracy: 2 / 3, shape_accuracy: 1 / 3, blank: 1 / 3, n: 3 },
    'yellow square': { color_accuracy: 1, shape_accuracy: 1, blank: 0, n: 1 },
  });
  assert.equal(r.shape_accuracy, 2 / 4);
  assert.equal(r.blank, 1 / 4);
  // Whatever the blank canvas's colour reading is, it is a guess; the overall figure counts it as read.
  assert.equal(r.color_accuracy, (2 + (blank.color === 'green' ? 1 : 0) + 1) / 4);
  assert.deepEqual(scoreDecoder([]), { color_accuracy: 0, shape_accuracy: 0, blank: 0, by_pair: {} });
});

test('each caption retrieves the image whose embedding has the largest dot product with its text embedding', () => {
  const images = [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
    [0.6, 0.8, 0],
  ];
  const captions = [
    [0, 0, 1], // image 2
    [0.1, 0.9, 0], // image 1 (0.9) over image 3 (0.78)
    [0.9, 0.6, 0], // image 3 (1.02) over image 0 (0.9)
    [-1, -1, -1], // all negative: images 0–2 tie at -1 above image 3's -1.4, and the first of them wins
  ];
  assert.deepEqual(retrievedImages(captions, images), [2, 1, 3, 0]);
  // Dot product, not cosine: a longer image embedding wins (CLIP's embeddings all have length 1, where the two agree).
  assert.deepEqual(retrievedImages([[1, 0]], [[1, 0], [3, 3]]), [1]);
});

test('a retrieval tie goes to the lower-numbered image', () => {
  assert.deepEqual(retrievedImages([[1, 0]], [[2, 0], [2, 5]]), [0]);
  assert.deepEqual(retrievedImages([[1, 0]], [[0, 1], [2, 0], [2, 1], [2, -1]]), [1]);
  assert.deepEqual(retrievedImages([[0, 0]], [[1, 0], [0, 1]]), [0]);
});

test('top-1 retrieval is the fraction of captions whose retrieved image fits them', () => {
  const images = [[1, 0], [0, 1], [-1, 0]];
  const captions = [[1, 0.1], [0.1, 1], [-1, 0], [0.9, 0.2]]; // retrieve 0, 1, 2, 0
  const asked: [number, number][] = [];
  assert.equal(retrievalTop1(captions, images, (q, j) => (asked.push([q, j]), j === q)), 3 / 4);
  assert.deepEqual(asked, [[0, 0], [1, 1], [2, 2], [3, 0]]);
  assert.equal(retrievalTop1(captions, images, (_q, j) => j === 0), 2 / 4);
  assert.equal(retrievalTop1(captions, images, () => false), 0);
});

test('mean cosine pairs row i with row i and ignores the vectors’ lengths', () => {
  // Cosines 1 and 1/√2 (paired otherwise, the rows would give 1/√2 and 0, or 1 and 0).
  assert.ok(Math.abs(meanCosine([[1, 0], [0, 2]], [[5, 0], [1, 1]]) - (1 + Math.SQRT1_2) / 2) < 1e-15);
  assert.equal(meanCosine([[3, 4]], [[6, 8]]), 1);
  assert.equal(meanCosine([[1, 0]], [[-2, 0]]), -1);
  assert.equal(meanCosine([], []), 0);
});

test('top-k retrieval: a hit when any of the k most similar images fits; the ranking breaks ties by index', () => {
  const images = [[1, 0], [0, 1], [-1, 0], [0.7, 0.7]];
  const captions = [[1, 0.1], [0, 1], [-1, -0.1]];
  // Caption 0: image 0 (1.0), image 3 (0.77), image 1 (0.1), image 2 (-1).
  assert.deepEqual(rankedImages(captions, images, 4)[0], [0, 3, 1, 2]);
  assert.deepEqual(rankedImages([[0, 0]], images, 2), [[0, 1]]);
  const own = (q: number, j: number) => j === q;
  assert.equal(retrievalTopK(captions, images, own, 1), 1); // caption q retrieves image q
  assert.equal(retrievalTopK(captions, images, (q, j) => j === q + 1, 1), 0);
  // The next caption's image: in caption 0's top 3 [0, 3, 1] and caption 2's [2, 1, 3], not in caption 1's [1, 3, 0].
  assert.equal(retrievalTopK(captions, images, (q, j) => j === q + 1, 3), 2 / 3);
  const third = (_q: number, j: number) => j === 1;
  assert.equal(retrievalTopK(captions, images, third, 1), 1 / 3);
  assert.equal(retrievalTopK(captions, images, third, 3), 1); // image 1 is in every caption's top 3
  assert.equal(retrievalTopK(captions, images, third, 2), 2 / 3); // caption 0's top 2 is [0, 3]; caption 2's [2, 1]
});
