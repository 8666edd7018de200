import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { ClipConfig } from '../../src/model/clip.ts';

test("docs/models.md 'CLIP' documents every config key with its default and description", async () => {
  const doc = await readFile(new URL('../../docs/models.md', import.meta.url), 'utf8');
  const start = doc.indexOf('\n## CLIP\n');
  assert.ok(start >= 0, "docs/models.md has no '## CLIP' section");
  const end = doc.indexOf('\n## ', start + 1);
  const rows = new Map<string, { value: string; meaning: string }>();
  for (const line of doc.slice(start, end < 0 ? undefined : end).split('\n')) {
    const m = /^\| `(\w+)` \| `(.*)` \| (.*) \|$/.exec(line);
    if (m) rows.set(m[1], { value: m[2], meaning: m[3] });
  }
  const defaults = ClipConfig.parse({}) as Record<string, unknown>;
  assert.deepEqual([...rows.keys()], Object.keys(defaults));
  for (const [key, value] of Object.entries(defaults)) {
    assert.equal(rows.get(key)!.value, JSON.stringify(value), `default of ${key}`);
    assert.equal(rows.get(key)!.meaning, ClipConfig.shape[key as keyof typeof ClipConfig.shape].description, `meaning of ${key}`);
  }
});
