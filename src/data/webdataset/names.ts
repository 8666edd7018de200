// img2dataset's naming, as pure functions: shards are `00000.tar`, `00001.tar`…; a sample's key is its
// 5-digit shard number followed by its 4-digit index inside the shard (`000000012`); a tar member is
// `{key}.{ext}`; optional sidecars `{shard}.parquet` and `{shard}_stats.json` sit beside each tar.

export const SHARD_DIGITS = 5;
export const INDEX_DIGITS = 4;

/** Extensions (lower case) that hold an image; the first such member of a sample is its image. */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set(['jpg', 'jpeg', 'png', 'webp', 'gif', 'bmp', 'tif', 'tiff', 'avif', 'heic', 'ppm', 'pgm', 'pbm']);
export const CAPTION_EXTENSION = 'txt';
export const JSON_EXTENSION = 'json';

/** `00042.tar` for shard 42 (more digits once the number outgrows five, as img2dataset does). */
export function shardName(index: number): string {
  if (!Number.isSafeInteger(index) || index < 0) throw new Error(`shard index must be a non-negative integer, got ${index}`);
  return `${String(index).padStart(SHARD_DIGITS, '0')}.tar`;
}

/** The shard number of `…/00042.tar`, or undefined when the name is not a numbered tar. */
export function parseShardName(key: string): number | undefined {
  const m = /(?:^|\/)(\d+)\.tar$/.exec(key);
  return m ? Number(m[1]) : undefined;
}

/** `000420012` for sample 12 of shard 42. */
export function sampleKey(shard: number, index: number): string {
  if (!Number.isSafeInteger(shard) || shard < 0) throw new Error(`shard number must be a non-negative integer, got ${shard}`);
  if (!Number.isSafeInteger(index) || index < 0 || index >= 10 ** INDEX_DIGITS) {
    throw new Error(`sample index must be an integer in [0, ${10 ** INDEX_DIGITS}), got ${index}`);
  }
  return String(shard).padStart(SHARD_DIGITS, '0') + String(index).padStart(INDEX_DIGITS, '0');
}

/** Shard number and index of an img2dataset key (`000420012` → {shard: 42, index: 12}), or undefined. */
export function parseSampleKey(key: string): { shard: number; index: number } | undefined {
  if (!/^\d+$/.test(key) || key.length < SHARD_DIGITS + INDEX_DIGITS) return undefined;
  return { shard: Number(key.slice(0, -INDEX_DIGITS)), index: Number(key.slice(-INDEX_DIGITS)) };
}

/**
 * Splits a tar member name into the sample key and the extension, WebDataset style: the key is everything up
 * to the first dot of the last path component (directories stay part of the key), the extension the rest.
 * A leading `./` (as `tar -C dir .` writes) is dropped. Undefined for names without an extension (they
 * belong to no sample).
 */
export function splitMemberName(member: string): { key: string; ext: string } | undefined {
  const name = member.replace(/^(?:\.\/)+/, '');
  const slash = name.lastIndexOf('/');
  const dot = name.indexOf('.', slash + 1);
  if (dot <= slash + 1 || dot === name.length - 1) return undefined;
  return { key: name.slice(0, dot), ext: name.slice(dot + 1) };
}

export function isImageExtension(ext: string): boolean {
  return IMAGE_EXTENSIONS.has(ext.toLowerCase());
}

/** `…/00042.parquet` beside `…/00042.tar`. */
export function parquetKeyFor(shardKey: string): string {
  return shardKey.replace(/\.tar$/, '.parquet');
}

/** `…/00042_stats.json` beside `…/00042.tar`. */
export function statsKeyFor(shardKey: string): string {
  return shardKey.replace(/\.tar$/, '_stats.json');
}

/** Joins a store prefix (`''`, `train`, `train/`) and a name with exactly one `/`. */
export function joinKey(prefix: string, name: string): string {
  const p = prefix.replace(/\/+$/, '');
  return p ? `${p}/${name}` : name;
}
