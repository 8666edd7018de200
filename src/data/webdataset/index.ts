// WebDataset shards in img2dataset's layout: names, the sample type, a streaming reader and a streaming writer.
export * from './names.ts';
export { addMember, sampleMembers, type Sample } from './sample.ts';
export { emptyReadStats, listShards, readShard, ShardReadError, type ReadShardOptions, type ShardInfo, type ShardReadStats } from './reader.ts';
export { mapOrdered, prefetch } from './ordered.ts';
export { ShardWriter, writeShard, type ShardWriterOptions, type WrittenShard } from './writer.ts';
