// One nats-server and one connection shared by every test of a file: started in `before`, drained and stopped in
// `after`. Read `nc` (or `server`) inside the tests, once the hook has run.
import { after, before } from 'node:test';
import { connect, type NatsConnection } from 'nats';
import { startNats, type NatsServer } from './nats.ts';

export function natsPerFile(): { readonly nc: NatsConnection; readonly server: NatsServer } {
  let server: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  before(async () => {
    server = await startNats();
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc?.drain();
    await server?.stop();
  });
  const ready = <T>(x: T | undefined): T => {
    if (x === undefined) throw new Error('natsPerFile: used before its before() hook ran');
    return x;
  };
  return {
    get nc() {
      return ready(nc);
    },
    get server() {
      return ready(server);
    },
  };
}
