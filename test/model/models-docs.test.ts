// docs/models.md's config tables are the user-facing reference for the model keys: they must match the schemas.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { ClipConfig } from '../../src/model/clip.ts';
import { PriorConfig } from '../../src/model/prior.ts';
import { DecoderConfig } from '../../src/model/unet.ts';

/** The `| key | default | meaning |` rows of the table under one `## heading` of docs/models.md. */
async function configTable(heading: string): Promise<Map<string, { value: string; meaning: string }>> {
  const doc = await readFile(new URL('../../docs/models.md', import.meta.url), 'utf8');
  const start = doc.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `docs/models.md has no '## ${heading}' section`);
  const end = doc.indexOf('\n## ', start + 1);
  const rows = new Map<string, { value: string; meaning: string }>();
  for (const line of doc.slice(start, end < 0 ? undefined : end).split('\n')) {
    const m = /^\| `(\w+)` \| `(.*)` \| (.*) \|$/.exec(line);
    if (m) rows.set(m[1], { value: m[2], meaning: m[3] });
  }
  return rows;
}

for (const [heading, schema] of [['CLIP', ClipConfig], ['Diffusion prior', PriorConfig], ['Decoder', DecoderConfig]] as const) {
  test(`docs/models.md '${heading}' documents every config key with its default and description`, async () => {
    const rows = await configTable(heading);
    const defaults = (schema as z.ZodType).parse({}) as Record<string, unknown>;
    const shape = (schema as unknown as { shape: Record<string, z.ZodType> }).shape;
    assert.deepEqual([...rows.keys()], Object.keys(defaults));
    for (const [key, value] of Object.entries(defaults)) {
      assert.equal(rows.get(key)!.value, JSON.stringify(value), `default of ${key}`);
      assert.equal(rows.get(key)!.meaning, shape[key].description, `meaning of ${key}`);
    }
  });
}
