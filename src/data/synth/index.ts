// The synthetic shapes dataset: vocabulary and ground truth (spec), the pure renderer, captions, and the writer.
export * from './spec.ts';
export { insideShape, rasterize, renderImage, type ImageFormat } from './render.ts';
export { englishCaption, ENGLISH_TEMPLATE_COUNT, FOREIGN, FOREIGN_LANGUAGES, positionWords, randomEnglishCaption, randomForeignCaption } from './captions.ts';
export { drawSpec, planTrainingSample, SynthConfig, trainingPairs, trainingSample, writeSynthDataset, type SynthManifest } from './dataset.ts';
