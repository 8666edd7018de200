// FilterConfig: every threshold the dataset filter applies. Defaults follow DALL·E's data filtering
// (English captions, aspect ratio within [½, 2]); the caption-length floor follows LAION's (≥ 5 characters).
import { availableParallelism } from 'node:os';
import { z } from 'zod';

export const FilterConfig = z
  .object({
    lang: z
      .string()
      .regex(/^[a-z]{2}$/, 'an ISO 639-1 code such as "en"')
      .default('en')
      .describe('keep only captions detected as this language (ISO 639-1)'),
    minAspect: z.number().positive().default(0.5).describe('smallest kept width/height of the decoded, EXIF-oriented image (inclusive)'),
    maxAspect: z.number().positive().default(2).describe('largest kept width/height of the decoded, EXIF-oriented image (inclusive)'),
    minCaptionChars: z.number().int().min(1).default(5).describe('drop captions shorter than this many characters after trimming'),
    minCaptionWords: z.number().int().min(1).default(1).describe('drop captions with fewer whitespace-separated words'),
    maxPixels: z
      .number()
      .int()
      .positive()
      .default(8192 * 8192)
      .describe('refuse images whose width × height exceeds this before decoding (decompression-bomb guard)'),
    workers: z
      .number()
      .int()
      .min(1)
      .default(Math.max(2, availableParallelism() * 2))
      .describe('samples checked concurrently; image decodes run on libuv threads, so this many images are in flight'),
  })
  .refine((c) => c.minAspect <= c.maxAspect, { message: 'minAspect must not exceed maxAspect', path: ['minAspect'] });

export type FilterConfig = z.output<typeof FilterConfig>;
