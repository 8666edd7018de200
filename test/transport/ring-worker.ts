// One rank of a ring in its own process, for the multi-process test:
//   node --import tsx test/transport/ring-worker.ts <natsUrl> <rank> <world> <n> <seed>
// All-reduces seededVector(n, seed + rank) at step 0 and prints the result's bytes as hex on stdout.
import { openNats, closeNats } from '../../src/transport/connection.ts';
import { openRing } from '../../src/transport/allreduce.ts';
import { seededVector } from './ring-fixtures.ts';

const [url, rank, world, n, seed] = process.argv.slice(2);
const nc = await openNats({ servers: url, name: `worker-${rank}` });
const ring = openRing(nc, { run: 'proc-run', generation: 1, rank: Number(rank), world: Number(world) }, { timeoutMs: 20_000 });
await nc.flush();
// Tell the parent we are subscribed; it starts everyone's all-reduce together by closing our stdin.
process.stdout.write('ready\n');
await new Promise((r) => process.stdin.once('end', r).resume());
const { values } = await ring.allReduce(seededVector(Number(n), Number(seed) + Number(rank)), { step: 0 });
process.stdout.write(Buffer.from(values.buffer).toString('hex') + '\n');
ring.close();
await closeNats(nc);
