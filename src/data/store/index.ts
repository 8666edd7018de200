// openStore(url): the single place that maps a URL scheme to an ObjectStore implementation.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileStore } from './file.ts';
import type { ObjectStore } from './types.ts';

export type { ObjectStore, ObjectInfo, ByteRange } from './types.ts';
export { NotFoundError } from './types.ts';

/** Opens `s3://bucket/prefix`, `file:///path` or a plain path (relative paths resolve against cwd). */
export async function openStore(url: string): Promise<ObjectStore> {
  if (url.startsWith('s3://')) {
    const { S3Store } = await import('./s3.ts');
    return S3Store.fromUrl(url);
  }
  if (url.startsWith('file://')) return new FileStore(fileURLToPath(url));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) throw new Error(`unsupported store URL scheme: ${url} (use s3://, file:// or a path)`);
  return new FileStore(resolve(url));
}
