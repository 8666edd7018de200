// Progress display for `easel filter`: a redrawn bar on a terminal, a plain log line every few seconds
// otherwise (CI logs, `kubectl logs`), both showing samples/s, the share kept and the time left.
import type { Logger } from '../../util/log.ts';
import type { FilterProgress } from './run.ts';

/** Seconds left at the current read rate, or undefined before there is a rate to go by. */
export function etaSeconds(p: FilterProgress): number | undefined {
  if (p.bytesRead <= 0 || p.elapsedMs <= 0) return undefined;
  return Math.max(0, (p.bytesTotal - p.bytesRead) / (p.bytesRead / (p.elapsedMs / 1000)));
}

export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** `shards 3/10  1,234 samples  412/s  kept 87.1%  ETA 1m05s` — the numbers both displays show. */
export function formatProgress(p: FilterProgress): string {
  const rate = p.elapsedMs > 0 ? p.samples / (p.elapsedMs / 1000) : 0;
  const kept = p.samples > 0 ? ((100 * p.kept) / p.samples).toFixed(1) + '%' : '--';
  return `shards ${p.shardsDone}/${p.shardsTotal}  ${p.samples.toLocaleString('en-US')} samples  ${rate.toFixed(0)}/s  kept ${kept}  ETA ${formatDuration(etaSeconds(p))}`;
}

export function progressBar(fraction: number, width: number): string {
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * width);
  return '[' + '#'.repeat(filled) + '-'.repeat(width - filled) + ']';
}

export interface ProgressDisplay {
  update(p: FilterProgress): void;
  /** Draws the final state and leaves the terminal on a fresh line. */
  done(): void;
}

/** A bar redrawn at most every 100 ms on a TTY; otherwise a log line every `everyMs`. */
export function progressDisplay(stream: NodeJS.WriteStream, log: Logger, everyMs = 10_000): ProgressDisplay {
  let last: FilterProgress | undefined;
  const tty = stream.isTTY === true;
  let drawnAt = tty ? -Infinity : performance.now(); // a bar at once; the first log line after `everyMs`
  const draw = () => {
    if (!last) return;
    if (tty) {
      const fraction = last.bytesTotal > 0 ? last.bytesRead / last.bytesTotal : 1;
      stream.write(`\r\x1b[K${progressBar(fraction, 24)} ${formatProgress(last)}`);
    } else {
      log.info(formatProgress(last));
    }
  };
  return {
    update(p) {
      last = p;
      const now = performance.now();
      if (now - drawnAt >= (tty ? 100 : everyMs)) {
        drawnAt = now;
        draw();
      }
    },
    done() {
      draw();
      if (tty && last) stream.write('\n');
    },
  };
}
