// The run's stage machine: CLIP → prior → decoder → upsampler, each trained for its step budget (0 skips it), all
// trainers moving together. Steps are counted per stage and over the whole run; CLIP is frozen once the prior starts.
import { stageBatchSize, STAGES, type RunConfig, type StageName } from '../trainer/config.ts';

/** The run file's stages, in training order. */
export const STAGE_ORDER = STAGES;
export type Stage = StageName;
export type Phase = 'training' | 'done';

export type StageBudgets = Record<Stage, number>;

export interface StageState {
  phase: Phase;
  /** The stage being trained (the last one once done). */
  stage: Stage;
  /** Optimiser steps completed in the current stage. */
  stageStep: number;
  /** Optimiser steps completed over the whole run. */
  step: number;
}

/** The state at the start of a run: the first stage with a non-zero budget (done at once if every budget is 0). */
export function initialStages(budgets: StageBudgets): StageState {
  const first = STAGE_ORDER.find((s) => budgets[s] > 0);
  return first ? { phase: 'training', stage: first, stageStep: 0, step: 0 } : { phase: 'done', stage: STAGE_ORDER[STAGE_ORDER.length - 1], stageStep: 0, step: 0 };
}

/**
 * One step of the current stage finished (its update applied on every rank). Returns the new state; when the
 * stage's budget is reached it moves to the next stage with a budget, or to `done`.
 */
export function completeStep(state: StageState, budgets: StageBudgets): StageState {
  if (state.phase === 'done') throw new Error('the run is done: no more steps to complete');
  const stageStep = state.stageStep + 1;
  const step = state.step + 1;
  if (stageStep < budgets[state.stage]) return { ...state, stageStep, step };
  const next = STAGE_ORDER.slice(STAGE_ORDER.indexOf(state.stage) + 1).find((s) => budgets[s] > 0);
  return next ? { phase: 'training', stage: next, stageStep: 0, step } : { phase: 'done', stage: state.stage, stageStep, step };
}

/** Whether a stage's weights are trained in the current state (CLIP is frozen once the prior starts). */
export function isTrainable(state: StageState, stage: Stage): boolean {
  return state.phase === 'training' && state.stage === stage;
}

/** A run file's step budget and batch size of every stage. */
export function stagePlan(config: RunConfig): { budgets: StageBudgets; batchSizes: StageBudgets } {
  const perStage = (f: (s: Stage) => number) => Object.fromEntries(STAGE_ORDER.map((s) => [s, f(s)])) as StageBudgets;
  return { budgets: perStage((s) => config.stages[s].steps), batchSizes: perStage((s) => stageBatchSize(config, s)) };
}

/** Steps the whole run takes. */
export function totalSteps(budgets: StageBudgets): number {
  return STAGE_ORDER.reduce((n, s) => n + budgets[s], 0);
}
