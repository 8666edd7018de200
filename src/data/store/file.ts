// ObjectStore over a local directory: the embedded default. Atomic publication = write a temp file
// beside the target, fsync, rename (rename is atomic within one filesystem).
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { buffer } from 'node:stream/consumers';
import { randomBytes } from 'node:crypto';
import { NotFoundError, type ByteRange, type ObjectInfo, type ObjectStore } from './types.ts';

const TMP_MARKER = '.easel-tmp-';

async function openTemp(tmp: string, attempts = 3): Promise<NodeJS.WritableStream> {
  await mkdir(dirname(tmp), { recursive: true });
  try {
    const fh = await open(tmp, 'wx');
    return fh.createWriteStream();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempts <= 1) throw err;
    return openTemp(tmp, attempts - 1);
  }
}

export class FileStore implements ObjectStore {
  readonly url: string;

  constructor(readonly root: string) {
    this.url = pathToFileURL(root).href;
  }

  private path(key: string): string {
    const p = join(this.root, key);
    const rel = relative(this.root, p);
    if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) throw new Error(`key escapes the store root: ${key}`);
    return p;
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const p = this.path(key);
    const s = await stat(p).catch(() => undefined);
    if (!s?.isFile()) throw new NotFoundError(`${this.url}/${key}`);
    const size = s.size;
    if (!range) return createReadStream(p);
    const start = range.start < 0 ? Math.max(0, size + range.start) : range.start;
    const end = range.start < 0 ? size - 1 : Math.min(range.end ?? size - 1, size - 1);
    if (end < start) return Readable.from([]);
    return createReadStream(p, { start, end });
  }

  async getBytes(key: string, range?: ByteRange): Promise<Buffer> {
    return buffer(await this.get(key, range));
  }

  async put(key: string, body: Buffer | Uint8Array | string | Readable): Promise<void> {
    const p = this.path(key);
    const tmp = `${p}${TMP_MARKER}${randomBytes(6).toString('hex')}`;
    try {
      const src = body instanceof Readable ? body : Readable.from([typeof body === 'string' ? Buffer.from(body) : Buffer.from(body)]);
      // The temp file is opened right after mkdir; a delete() emptying the same folder in between removes it,
      // hence one more mkdir on ENOENT.
      const out = await openTemp(tmp);
      await pipeline(src, out);
      const fh = await open(tmp, 'r+');
      await fh.sync();
      await fh.close();
      await rename(tmp, p);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? { key, size: s.size } : undefined;
    } catch {
      return undefined;
    }
  }

  async *list(prefix = ''): AsyncIterable<ObjectInfo> {
    const all: ObjectInfo[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const p = join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile() && !e.name.includes(TMP_MARKER)) {
          const key = relative(this.root, p).split(sep).join('/');
          if (key.startsWith(prefix)) all.push({ key, size: (await stat(p)).size });
        }
      }
    };
    await walk(this.root);
    all.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* all;
  }

  async delete(key: string): Promise<void> {
    const p = this.path(key);
    await rm(p, { force: true });
    // An object store has no folders: a directory exists only while it holds objects, so pruned checkpoints
    // leave no empty step-… folders behind. rmdir refuses non-empty directories (a concurrent put's temp file
    // included), so this never removes anything but empty ones.
    for (let dir = dirname(p); relative(this.root, dir) !== ''; dir = dirname(dir)) {
      try {
        await rmdir(dir);
      } catch {
        break;
      }
    }
  }

  async close(): Promise<void> {}
}
