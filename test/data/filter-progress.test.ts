// The filter's progress display: the numbers it shows, a bar on a terminal, plain log lines otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { etaSeconds, formatDuration, formatProgress, progressBar, progressDisplay } from '../../src/data/filter/progress.ts';
import type { FilterProgress } from '../../src/data/filter/run.ts';
import type { Logger } from '../../src/util/log.ts';

const halfway: FilterProgress = { shardsTotal: 10, shardsDone: 5, samples: 2000, kept: 1742, bytesTotal: 1000, bytesRead: 500, elapsedMs: 4000 };

test('progress shows samples/s, the share kept and the time left at the current read rate', () => {
  assert.equal(etaSeconds(halfway), 4);
  assert.equal(formatProgress(halfway), 'shards 5/10  2,000 samples  500/s  kept 87.1%  ETA 4s');
  assert.equal(etaSeconds({ ...halfway, bytesRead: 0 }), undefined, 'no rate yet, no ETA');
  assert.ok(formatProgress({ ...halfway, samples: 0, kept: 0, bytesRead: 0 }).endsWith('kept --  ETA --'));
});

test('durations read as seconds, minutes or hours', () => {
  assert.equal(formatDuration(59.4), '59s');
  assert.equal(formatDuration(65), '1m05s');
  assert.equal(formatDuration(3 * 3600 + 7 * 60), '3h07m');
  assert.equal(formatDuration(undefined), '--');
});

test('the bar fills in proportion and never overflows', () => {
  assert.equal(progressBar(0.5, 10), '[#####-----]');
  assert.equal(progressBar(1.7, 4), '[####]');
  assert.equal(progressBar(-1, 4), '[----]');
});

function recorder(isTTY: boolean) {
  const written: string[] = [];
  const logged: string[] = [];
  const stream = { isTTY, write: (s: string) => written.push(s) > 0 } as unknown as NodeJS.WriteStream;
  const log: Logger = { debug: () => {}, info: (m) => void logged.push(m), warn: () => {}, error: () => {} };
  return { written, logged, display: progressDisplay(stream, log) };
}

test('on a terminal the bar is redrawn in place and ends on a fresh line', () => {
  const { written, logged, display } = recorder(true);
  display.update(halfway);
  display.update({ ...halfway, samples: 2001 }); // within 100 ms: not redrawn
  display.done();
  assert.equal(logged.length, 0);
  assert.equal(written.length, 3);
  assert.equal(written[0], '\r\x1b[K[############------------] shards 5/10  2,000 samples  500/s  kept 87.1%  ETA 4s');
  assert.ok(written[1].startsWith('\r\x1b[K') && written[1].includes('2,001 samples'), 'done() draws the last state');
  assert.equal(written[2], '\n');
});

test('without a terminal progress goes to the log as plain lines, no control characters', () => {
  const { written, logged, display } = recorder(false);
  display.update(halfway); // the first line comes after the interval, not at once
  display.done();
  assert.equal(written.length, 0);
  assert.deepEqual(logged, ['shards 5/10  2,000 samples  500/s  kept 87.1%  ETA 4s']);
});
