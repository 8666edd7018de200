// mapOrdered: applies an async function to a stream with at most `concurrency` calls in flight and yields the
// results in input order. Used wherever samples are rendered or decoded (libvips works on its own threads,
// so several images in flight keep both cores busy while the consumer sees a plain ordered stream).

export async function* mapOrdered<T, U>(input: Iterable<T> | AsyncIterable<T>, concurrency: number, fn: (item: T) => Promise<U>): AsyncGenerator<U> {
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`concurrency must be a positive integer, got ${concurrency}`);
  const window: Promise<U>[] = [];
  try {
    for await (const item of input) {
      const p = fn(item);
      p.catch(() => {}); // observed when its turn comes; avoids an unhandled rejection meanwhile
      window.push(p);
      if (window.length >= concurrency) yield await window.shift()!;
    }
    while (window.length) yield await window.shift()!;
  } finally {
    // An early exit (consumer break or error) still waits for calls already started, so none outlives us.
    await Promise.allSettled(window);
  }
}

/**
 * Runs up to `depth` items ahead of the consumer: while the caller is busy (a training step), the next items
 * are already being produced. Order and content are exactly those of `source`.
 */
export async function* prefetch<T>(source: AsyncIterable<T>, depth: number): AsyncGenerator<T> {
  if (!Number.isInteger(depth) || depth < 0) throw new Error(`prefetch depth must be a non-negative integer, got ${depth}`);
  const it = source[Symbol.asyncIterator]();
  // An async generator queues concurrent next() calls and runs them one after another, so asking early is safe.
  const ahead: Promise<IteratorResult<T>>[] = [];
  try {
    for (;;) {
      while (ahead.length <= depth) {
        const p = it.next();
        p.catch(() => {}); // observed when its turn comes
        ahead.push(p);
      }
      const r = await ahead.shift()!;
      if (r.done) return;
      yield r.value;
    }
  } finally {
    await Promise.allSettled(ahead);
    await it.return?.(undefined);
  }
}
