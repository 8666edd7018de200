// The dataset filter: DALL·E-style checks on every caption–image sample of a WebDataset dataset.
export { FilterConfig } from './config.ts';
export { DROP_REASONS, type DropReason, type Check } from './reasons.ts';
export { checkCaption, decodeCaption, decodeUtf8 } from './caption.ts';
export { checkAspect, decodeImage, type DecodedImage } from './image.ts';
export { checkJson, checkSample, type LanguageCheck, type Verdict } from './sample.ts';
export { assertBalanced, type FilterStats, type ShardStats } from './stats.ts';
export { CONFIG_KEY, STATS_KEY, filterDataset, type FilterOptions, type FilterProgress } from './run.ts';
export { formatProgress, progressDisplay } from './progress.ts';
