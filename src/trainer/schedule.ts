// Learning-rate schedule: linear warmup from 0, then a half cosine down to min_ratio × lr at the stage's last step.
// A pure function of the step, so a resumed run needs no schedule state.

export interface LrSchedule {
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  /** Final learning rate as a fraction of lr. */
  minRatio: number;
}

/** Learning rate for the 0-based step `step` of a stage. */
export function learningRateAt(s: LrSchedule, step: number): number {
  if (step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps;
  const span = Math.max(1, s.totalSteps - s.warmupSteps - 1);
  const progress = Math.min(1, (step - s.warmupSteps) / span);
  const min = s.lr * s.minRatio;
  return min + 0.5 * (s.lr - min) * (1 + Math.cos(Math.PI * progress));
}
