import { test } from 'node:test';
import assert from 'node:assert/strict';
import { completeStep, initialStages, isTrainable, totalSteps } from '../../src/coordinator/stages.ts';

test('the run moves CLIP → prior → decoder → upsampler when each step budget is spent', () => {
  const budgets = { clip: 2, prior: 1, decoder: 2, upsampler: 1 };
  let s = initialStages(budgets);
  const seen: string[] = [];
  while (s.phase === 'training') {
    seen.push(`${s.stage}:${s.stageStep}`);
    s = completeStep(s, budgets);
  }
  assert.deepEqual(seen, ['clip:0', 'clip:1', 'prior:0', 'decoder:0', 'decoder:1', 'upsampler:0']);
  assert.equal(s.step, totalSteps(budgets));
  assert.throws(() => completeStep(s, budgets), /done/);
});

test('a stage with a zero budget is skipped, and CLIP is frozen once the prior starts', () => {
  const budgets = { clip: 1, prior: 0, decoder: 1, upsampler: 0 };
  const s = completeStep(initialStages(budgets), budgets);
  assert.equal(s.stage, 'decoder');
  assert.equal(isTrainable(s, 'clip'), false);
  assert.equal(initialStages({ clip: 0, prior: 0, decoder: 0, upsampler: 0 }).phase, 'done');
});
