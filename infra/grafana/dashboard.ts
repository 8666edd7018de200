// The easel Grafana dashboard, written against @grafana/schema's published types so `tsc` checks every panel.
// `npx tsx scripts/gen-crd.ts` writes it to infra/grafana/easel.json (and the ConfigMap in k8s/base); a test
// checks both equal this object.
import {
  BigValueColorMode, BigValueGraphMode, BigValueJustifyMode, BigValueTextMode, LegendDisplayMode, SortOrder, ThresholdsMode, TooltipDisplayMode,
  type Dashboard, type DataSourceRef, type Panel, type VariableModel,
} from '@grafana/schema';
import type { Options as TimeSeriesOptions, FieldConfig as TimeSeriesFieldConfig } from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type { Options as StatOptions } from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';

const prometheus: DataSourceRef = { type: 'prometheus', uid: '${datasource}' };

interface Query {
  expr: string;
  legend: string;
}

const targets = (queries: Query[]) =>
  queries.map((q, i) => ({ refId: String.fromCharCode(65 + i), datasource: prometheus, expr: q.expr, legendFormat: q.legend }));

let nextId = 1;

function timeseries(title: string, description: string, unit: string, queries: Query[], gridPos: { x: number; y: number; w?: number; h?: number }): Panel {
  const custom: Partial<TimeSeriesFieldConfig> = { lineWidth: 1, fillOpacity: 10, spanNulls: false };
  const options: TimeSeriesOptions = {
    legend: { showLegend: true, displayMode: LegendDisplayMode.List, placement: 'bottom', calcs: ['lastNotNull'] },
    tooltip: { mode: TooltipDisplayMode.Multi, sort: SortOrder.None },
  };
  return {
    id: nextId++,
    type: 'timeseries',
    title,
    description,
    datasource: prometheus,
    gridPos: { w: 12, h: 8, ...gridPos },
    fieldConfig: { defaults: { unit, custom: custom as Record<string, unknown> }, overrides: [] },
    options: options as unknown as Record<string, unknown>,
    targets: targets(queries),
  };
}

function stat(title: string, description: string, unit: string, query: Query, gridPos: { x: number; y: number }, thresholds: { value: number | null; color: string }[]): Panel {
  const options: Partial<StatOptions> = {
    graphMode: BigValueGraphMode.Area,
    colorMode: BigValueColorMode.Value,
    justifyMode: BigValueJustifyMode.Auto,
    textMode: BigValueTextMode.Auto,
    reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
  };
  return {
    id: nextId++,
    type: 'stat',
    title,
    description,
    datasource: prometheus,
    gridPos: { w: 6, h: 4, ...gridPos },
    fieldConfig: { defaults: { unit, thresholds: { mode: ThresholdsMode.Absolute, steps: thresholds } }, overrides: [] },
    options: options as Record<string, unknown>,
    targets: targets([query]),
  };
}

const run = 'run=~"$run"';

const variables: VariableModel[] = [
  { type: 'datasource', name: 'datasource', label: 'Data source', query: 'prometheus' },
  {
    type: 'query',
    name: 'run',
    label: 'Run',
    datasource: prometheus,
    query: 'label_values(easel_step, run)',
    refresh: 2,
    includeAll: true,
    multi: true,
  },
];

export const dashboard: Dashboard = {
  uid: 'easel-training',
  title: 'easel training',
  description: 'One easel run (or several): progress, loss per stage, throughput, all-reduce, data loading, membership, checkpoints. Metrics from the coordinator (src/coordinator/metrics.ts).',
  tags: ['easel', 'training'],
  editable: true,
  schemaVersion: 41,
  graphTooltip: 1,
  refresh: '30s',
  time: { from: 'now-6h', to: 'now' },
  templating: { list: variables },
  panels: [
    stat('Step', 'optimiser steps completed over the whole run', 'none', { expr: `easel_step{${run}}`, legend: '{{run}}' }, { x: 0, y: 0 }, [{ value: null, color: 'blue' }]),
    stat('Trainers', 'trainers in the current generation', 'none', { expr: `easel_members{${run}}`, legend: '{{run}}' }, { x: 6, y: 0 }, [
      { value: null, color: 'red' },
      { value: 1, color: 'green' },
    ]),
    stat('Checkpoint age', 'seconds since the newest checkpoint (alert EaselCheckpointTooOld above 1 h)', 's', { expr: `easel_checkpoint_age_seconds{${run}}`, legend: '{{run}}' }, { x: 12, y: 0 }, [
      { value: null, color: 'green' },
      { value: 1800, color: 'orange' },
      { value: 3600, color: 'red' },
    ]),
    stat('Samples seen', 'fraction of this epoch consumed (each sample counted once over the fleet)', 'percentunit', { expr: `easel_samples_seen{${run}} / easel_expected_samples{${run}}`, legend: '{{run}}' }, { x: 18, y: 0 }, [{ value: null, color: 'blue' }]),
    timeseries('Throughput', 'samples per second over the fleet', 'short', [{ expr: `easel_samples_per_second{${run}}`, legend: '{{run}} {{stage}}' }], { x: 0, y: 4 }),
    timeseries('Loss per stage', 'loss of the last completed step, by stage (CLIP contrastive, prior, decoder and upsampler MSE), and the held-out loss at each validation (validation.every)', 'none', [
      { expr: `easel_loss{${run}}`, legend: '{{run}} {{stage}}' },
      { expr: `easel_validation_loss{${run}}`, legend: '{{run}} {{stage}} held-out' },
    ], { x: 12, y: 4 }),
    timeseries('Step time', 'median and 95th percentile step wall time', 's', [
      { expr: `histogram_quantile(0.5, sum by (run, le) (rate(easel_step_seconds_bucket{${run}}[5m])))`, legend: '{{run}} p50' },
      { expr: `histogram_quantile(0.95, sum by (run, le) (rate(easel_step_seconds_bucket{${run}}[5m])))`, legend: '{{run}} p95' },
    ], { x: 0, y: 12 }),
    timeseries('All-reduce bandwidth', 'gradient bytes each trainer sends per second spent in all-reduce (bus bandwidth)', 'Bps', [
      { expr: `rate(easel_allreduce_bytes_total{${run}}[5m]) / rate(easel_allreduce_seconds_total{${run}}[5m])`, legend: '{{run}}' },
    ], { x: 12, y: 12 }),
    timeseries('Data wait', 'share of step time trainers wait for batches (alert EaselDataStarvation above 30%)', 'percentunit', [
      { expr: `sum by (run) (rate(easel_data_wait_seconds_total{${run}}[5m])) / sum by (run) (rate(easel_step_seconds_sum{${run}}[5m]))`, legend: '{{run}}' },
    ], { x: 0, y: 20 }),
    timeseries('Members', 'trainers in the generation, registered trainers, generation changes', 'none', [
      { expr: `easel_members{${run}}`, legend: '{{run}} members' },
      { expr: `easel_registered_trainers{${run}}`, legend: '{{run}} registered' },
      { expr: `increase(easel_generation_changes_total{${run}}[15m])`, legend: '{{run}} generation changes / 15m' },
    ], { x: 12, y: 20 }),
    timeseries('Shards', 'shards of the current epoch by state', 'none', [{ expr: `easel_shards{${run}}`, legend: '{{run}} {{state}}' }], { x: 0, y: 28 }),
    timeseries('Checkpoints', 'checkpoint age and write time', 's', [
      { expr: `easel_checkpoint_age_seconds{${run}}`, legend: '{{run}} age' },
      { expr: `rate(easel_checkpoint_seconds_sum{${run}}[30m]) / rate(easel_checkpoint_seconds_count{${run}}[30m])`, legend: '{{run}} write time' },
    ], { x: 12, y: 28 }),
    timeseries('Skipped steps', 'steps every rank skipped because the all-reduced gradient was NaN/Inf, by stage (alert EaselStepsSkipped above 3 in 10 m)', 'none', [
      { expr: `increase(easel_steps_skipped_total{${run}}[15m])`, legend: '{{run}} {{stage}} / 15m' },
    ], { x: 0, y: 36 }),
  ],
};
