// Checkpoints through the object store (file:// or s3://). One checkpoint is a folder under the run's checkpoint URL:
//   step-000000120/weights.safetensors     every model's weights ("clip.…", "prior.…", "decoder.…") and EMA ("ema.prior.…")
//   step-000000120/optimizer.safetensors   the current stage's Adam state ("adam.iterations", "<param>/m", "<param>/v")
//   step-000000120/manifest.json           config, stage, step, data cursor, seed, tokenizer merges, easel version, created time
//   latest.json                            {"checkpoint": "step-000000120", …}, written last
// Each object is published atomically by the store and the manifest is written after the tensors, so a folder
// with a manifest is complete; latest.json only ever names a complete one. Old folders are pruned to `keep`.
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import type { NamedTensor } from '@tensorflow/tfjs-core/dist/tensor_types.js';
import { openStore, type ObjectStore } from '../data/store/index.ts';
import { decodeSafetensors, encodeSafetensors, type SafeTensor } from './safetensors.ts';
import type { TokenizerJson } from '../model/tokenizer.ts';
import { logger } from '../util/log.ts';
import { UsageError } from '../cli/args.ts';
import { resumeCompatibility, showDifference, type RunConfig, type ResumeCompatibility } from './config.ts';

const log = logger('checkpoint');

export const EASEL_VERSION: string = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

export const LATEST = 'latest.json';
const WEIGHTS = 'weights.safetensors';
const OPTIMIZER = 'optimizer.safetensors';
const MANIFEST = 'manifest.json';

/** Where the loader stands: the position after the last batch consumed (see src/data/loader.ts). */
export interface DataCursor {
  epoch: number;
  shard: number;
  sample: number;
}

/**
 * Where a distributed run's data stood at the checkpointed step: the epoch its ranks read and every shard's
 * consumed-sample offset in the coordinator's lease table (a TableSnapshot; a shard is done when its offset
 * reaches its sample count). Rank 0 of a resumed run hands it back to the coordinator (the `rewind` verb).
 */
export interface FleetCursor {
  fleet: { epoch: number; table: { epoch: number; offsets: string } };
}

/** A single process's loader position, or a distributed run's lease table. */
export function isFleetCursor(c: DataCursor | FleetCursor | null | undefined): c is FleetCursor {
  return typeof c === 'object' && c !== null && 'fleet' in c;
}

export interface Manifest {
  format: 1;
  easel_version: string;
  created: string;
  run: string;
  /** The stage being trained and how many of its steps are done (steps == budget: the stage is finished). */
  stage: string;
  stage_step: number;
  /** Steps done over all stages; also the checkpoint's folder name. */
  global_step: number;
  data_cursor: DataCursor | FleetCursor | null;
  /** Every random draw is seeded by deriveSeed(seed, stage, step, …): the base seed is the whole RNG state. */
  rng: { seed: number; derivation: string };
  skipped_steps: Record<string, number>;
  /** Last logged loss per stage, for people reading the folder. */
  loss: Record<string, number>;
  files: { weights: string; optimizer: string | null };
  /** The validated run config (JSON). */
  config: unknown;
  /** The run's learnt BPE merges (tokenizer.ts); absent for the byte tokenizer (and checkpoints from before BPE). */
  tokenizer?: TokenizerJson;
}

export type ManifestInput = Omit<Manifest, 'format' | 'easel_version' | 'created' | 'files'>;

export interface CheckpointWrite {
  manifest: ManifestInput;
  /** Named tensors to save, already prefixed ("clip.visual.proj.w", "ema.prior.…"). */
  weights: Iterable<[string, tf.Tensor]>;
  /** The current stage's optimiser and the params it updates (its moments are saved under the params' names). */
  optimizer?: { optimizer: tf.Optimizer; params: Map<string, tf.Variable> };
}

export interface CheckpointData {
  /** URL of the checkpoint folder that was read. */
  url: string;
  manifest: Manifest;
  weights: Map<string, SafeTensor>;
  optimizer: Map<string, SafeTensor> | undefined;
}

export function checkpointName(globalStep: number): string {
  return `step-${String(globalStep).padStart(9, '0')}`;
}

function joinUrl(base: string, key: string): string {
  return key ? `${base.replace(/\/+$/, '')}/${key}` : base;
}

function toSafeTensor(t: tf.Tensor): SafeTensor {
  if (t.dtype !== 'float32' && t.dtype !== 'int32') throw new Error(`cannot checkpoint a ${t.dtype} tensor`);
  const data = t.dataSync() as Float32Array | Int32Array;
  return { dtype: t.dtype === 'float32' ? 'F32' : 'I32', shape: t.shape, data };
}

// tfjs's Adam keeps β1^t and β2^t as running products; setWeights() recomputes them with pow(), which can differ
// in the last bit, so we save and restore the products themselves.
type AdamInternals = { accBeta1: tf.Variable; accBeta2: tf.Variable };

/** Adam's state as named tensors, with the moments named after params() (tfjs names them after variable ids). */
export async function optimizerTensors(optimizer: tf.Optimizer, params: Map<string, tf.Variable>): Promise<[string, SafeTensor][]> {
  const weights = await optimizer.getWeights();
  try {
    const [iter, ...moments] = weights;
    const names = [...params.keys()];
    const n = moments.length / 2;
    if (n !== 0 && n !== names.length) throw new Error(`optimizer holds moments for ${n} variables, the stage has ${names.length}`);
    const out: [string, SafeTensor][] = [['adam.iterations', { dtype: 'I32', shape: [], data: new Int32Array([iter.tensor.dataSync()[0]]) }]];
    const adam = optimizer as unknown as AdamInternals;
    if (adam.accBeta1) {
      out.push(['adam.acc_beta1', toSafeTensor(adam.accBeta1)], ['adam.acc_beta2', toSafeTensor(adam.accBeta2)]);
    }
    moments.forEach((w, i) => out.push([`${names[i % n]}/${i < n ? 'm' : 'v'}`, toSafeTensor(w.tensor)]));
    return out;
  } finally {
    weights[0].tensor.dispose(); // getWeights() makes a fresh iterations scalar; the moments are the optimiser's own
  }
}

/** Restores Adam's state saved by optimizerTensors into a fresh optimiser of the same stage. */
export async function restoreOptimizer(optimizer: tf.Optimizer, params: Map<string, tf.Variable>, saved: Map<string, SafeTensor>): Promise<void> {
  const iterations = saved.get('adam.iterations');
  if (!iterations) throw new Error('optimizer state lacks adam.iterations');
  const hasMoments = [...params.keys()].some((p) => saved.has(`${p}/m`));
  const named: NamedTensor[] = [{ name: 'iter', tensor: tf.scalar(iterations.data[0] as number, 'int32') }];
  if (hasMoments) {
    for (const suffix of ['m', 'v']) {
      for (const [p, v] of params) {
        const t = saved.get(`${p}/${suffix}`);
        if (!t) throw new Error(`optimizer state lacks ${p}/${suffix}`);
        if (t.shape.join() !== v.shape.join()) throw new Error(`optimizer state ${p}/${suffix} has shape [${t.shape}], the param has [${v.shape}]`);
        named.push({ name: `${v.name}/${suffix}`, tensor: tf.tensor(t.data as Float32Array, t.shape, 'float32') });
      }
    }
  }
  try {
    await optimizer.setWeights(named);
    const adam = optimizer as unknown as AdamInternals;
    const b1 = saved.get('adam.acc_beta1');
    const b2 = saved.get('adam.acc_beta2');
    if (adam.accBeta1 && b1 && b2) {
      adam.accBeta1.assign(tf.scalar(b1.data[0] as number));
      adam.accBeta2.assign(tf.scalar(b2.data[0] as number));
    }
  } finally {
    tf.dispose(named.map((n) => n.tensor)); // setWeights made variables of its own that share the data
  }
}

/** Copies saved tensors named `${prefix}${param}` into params; throws naming any missing or misshapen one. */
export function assignWeights(params: Map<string, tf.Variable>, saved: Map<string, SafeTensor>, prefix: string): void {
  for (const [name, v] of params) {
    const t = saved.get(prefix + name);
    if (!t) throw new Error(`checkpoint lacks ${prefix}${name}`);
    if (t.shape.join() !== v.shape.join()) throw new Error(`checkpoint tensor ${prefix}${name} has shape [${t.shape}], the model has [${v.shape}]`);
    tf.tidy(() => v.assign(tf.tensor(t.data as Float32Array | Int32Array, t.shape, v.dtype)));
  }
}

/** A checkpoint's content copied out of the live tensors: it can be written while training goes on. */
export interface CheckpointSnapshot {
  manifest: ManifestInput;
  weights: [string, SafeTensor][];
  optimizer: [string, SafeTensor][] | undefined;
}

/**
 * Reads weights and optimiser state out of the model now. No further copy is needed for the snapshot to stay
 * unchanged while training continues: dataSync() copies out of the backend (wasm, tensorflow) or returns the cpu
 * backend's own values, which tfjs never writes again (kernels make new tensors; Variable.assign swaps data).
 */
export async function snapshotCheckpoint(ckpt: CheckpointWrite): Promise<CheckpointSnapshot> {
  return {
    manifest: structuredClone(ckpt.manifest),
    weights: [...ckpt.weights].map(([n, t]) => [n, toSafeTensor(t)]),
    optimizer: ckpt.optimizer ? await optimizerTensors(ckpt.optimizer.optimizer, ckpt.optimizer.params) : undefined,
  };
}

/** Writes one checkpoint under `store`, then points latest.json at it and prunes to `keep`. Returns its URL. */
export async function writeCheckpoint(store: ObjectStore, ckpt: CheckpointWrite, keep: number): Promise<string> {
  return writeSnapshot(store, await snapshotCheckpoint(ckpt), keep);
}

/** Writes a snapshot as checkpoint `step-<global_step>` (weights, optimiser, manifest last, then `latest`). */
export async function writeSnapshot(store: ObjectStore, snap: CheckpointSnapshot, keep: number): Promise<string> {
  const started = performance.now();
  const name = checkpointName(snap.manifest.global_step);
  const weights = encodeSafetensors(snap.weights, { format: 'easel', stage: snap.manifest.stage });
  await store.put(`${name}/${WEIGHTS}`, weights);
  let optimizerFile: string | null = null;
  if (snap.optimizer) {
    await store.put(`${name}/${OPTIMIZER}`, encodeSafetensors(snap.optimizer));
    optimizerFile = OPTIMIZER;
  }
  const manifest: Manifest = {
    format: 1,
    easel_version: EASEL_VERSION,
    created: new Date().toISOString(),
    ...snap.manifest,
    files: { weights: WEIGHTS, optimizer: optimizerFile },
  };
  await store.put(`${name}/${MANIFEST}`, JSON.stringify(manifest, null, 2) + '\n');
  await store.put(LATEST, JSON.stringify({ checkpoint: name, stage: manifest.stage, stage_step: manifest.stage_step, global_step: manifest.global_step }) + '\n');
  await pruneCheckpoints(store, keep, name);
  log.info('checkpoint written', { url: joinUrl(store.url, name), bytes: weights.length, ms: Math.round(performance.now() - started) });
  return joinUrl(store.url, name);
}

/** Deletes all but the newest `keep` complete checkpoints, and incomplete folders older than `current`. */
export async function pruneCheckpoints(store: ObjectStore, keep: number, current: string): Promise<void> {
  const folders = new Map<string, string[]>();
  for await (const o of store.list('step-')) {
    const folder = o.key.split('/')[0];
    folders.set(folder, [...(folders.get(folder) ?? []), o.key]);
  }
  const complete = [...folders].filter(([, keys]) => keys.some((k) => k.endsWith(`/${MANIFEST}`))).map(([f]) => f).sort();
  const doomed = complete.slice(0, Math.max(0, complete.length - Math.max(1, keep)));
  for (const folder of folders.keys()) if (!complete.includes(folder) && folder < current) doomed.push(folder);
  for (const folder of doomed) {
    if (folder === current) continue;
    const keys = folders.get(folder)!;
    // Manifest first: a half-deleted folder then reads as incomplete, never as a checkpoint with missing tensors.
    keys.sort((a, b) => Number(b.endsWith(MANIFEST)) - Number(a.endsWith(MANIFEST)));
    for (const k of keys) await store.delete(k);
    log.debug('pruned checkpoint', { folder });
  }
}

/**
 * Resolves a checkpoint URL: a run's checkpoint folder (follows latest.json) or one checkpoint (has manifest.json).
 * Returns the opened store rooted at the checkpoint itself.
 */
export async function resolveCheckpoint(url: string): Promise<{ store: ObjectStore; url: string }> {
  const root = await openStore(url);
  if (await root.head(MANIFEST)) return { store: root, url: root.url };
  if (await root.head(LATEST)) {
    const { checkpoint } = JSON.parse((await root.getBytes(LATEST)).toString('utf8')) as { checkpoint: string };
    await root.close();
    const target = joinUrl(url, checkpoint);
    const store = await openStore(target);
    if (!(await store.head(MANIFEST))) {
      await store.close();
      throw new Error(`${joinUrl(url, LATEST)} points at ${checkpoint}, which has no ${MANIFEST}`);
    }
    return { store, url: store.url };
  }
  await root.close();
  throw new Error(`no checkpoint at ${url}: neither ${LATEST} nor ${MANIFEST} found`);
}

/** Reads a checkpoint's manifest and tensors (resolving latest.json). */
export async function readCheckpoint(url: string): Promise<CheckpointData> {
  const { store, url: resolved } = await resolveCheckpoint(url);
  try {
    const manifest = JSON.parse((await store.getBytes(MANIFEST)).toString('utf8')) as Manifest;
    if (manifest.format !== 1) throw new Error(`${resolved}: unsupported checkpoint format ${manifest.format}`);
    const weights = decodeSafetensors(await store.getBytes(manifest.files.weights)).tensors;
    const optimizer = manifest.files.optimizer ? decodeSafetensors(await store.getBytes(manifest.files.optimizer)).tensors : undefined;
    return { url: resolved, manifest, weights, optimizer };
  } finally {
    await store.close();
  }
}

/**
 * Refuses (UsageError naming every field) to resume `ckpt` under a run config with another model architecture;
 * logs a warning listing the other fields that changed. Both `easel train --resume` and `easel trainer` call it.
 */
export function checkResumable(ckpt: { url: string; manifest: Pick<Manifest, 'config'> }, config: RunConfig): ResumeCompatibility {
  const r = resumeCompatibility(ckpt.manifest.config, config);
  const show = showDifference('checkpoint', 'run file');
  if (r.incompatible.length) {
    throw new UsageError(`cannot resume from ${ckpt.url}: the run file changes the model architecture:\n${r.incompatible.map(show).join('\n')}\n(resume with the checkpoint's model settings, or start fresh)`);
  }
  if (r.changed.length) log.warn(`resuming ${ckpt.url} with ${r.changed.length} changed setting(s): ${r.changed.map(show).join('; ')}`);
  return r;
}
