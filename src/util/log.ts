// One logger for every component: plain lines on stderr, level from EASEL_LOG (debug|info|warn|error).
// JSON lines instead when EASEL_LOG_FORMAT=json, so pods on Kubernetes ship structured logs.
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LEVELS;

function threshold(): number {
  const l = (process.env.EASEL_LOG ?? 'info') as LogLevel;
  return LEVELS[l] ?? LEVELS.info;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function logger(component: string): Logger {
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] < threshold()) return;
    if (process.env.EASEL_LOG_FORMAT === 'json') {
      process.stderr.write(JSON.stringify({ t: new Date().toISOString(), level, component, msg, ...fields }) + '\n');
      return;
    }
    const extra = fields ? ' ' + Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ') : '';
    process.stderr.write(`${new Date().toISOString()} ${level.padEnd(5)} [${component}] ${msg}${extra}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}
