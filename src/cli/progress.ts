// Progress of a long transfer (saving or restoring a snapshot), on stderr so stdout stays the
// command's answer. On a terminal, one line redrawn in place: a bar, the percentage and the
// bytes. Anywhere else (a pipe, a CI log), a plain line at each quarter, so a log shows the
// transfer moving without filling up with redraws.

/** Redraws on a terminal at most this often: a fast transfer must not spend its time drawing. */
const REDRAW_INTERVAL_MS = 100;
/** Off a terminal, a line each time the transfer passes another step of this many percent. */
const PLAIN_STEP_PERCENT = 25;
const BAR_CELLS = 30;
const BYTE_UNITS = ["B", "KiB", "MiB", "GiB"] as const;

/** Where progress goes: a stream that may be a terminal. */
export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

export interface ProgressOptions {
  /** What is moving, for example "saving snapshot". */
  readonly label: string;
  /** The bytes the transfer will move, when known; without it only the bytes so far are shown. */
  readonly totalBytes: number | undefined;
  readonly stream: ProgressStream;
  readonly nowMs?: () => number;
}

/** 1536 as "1.5 KiB": binary units, one decimal below 10 of a unit. */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes} B`;
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${BYTE_UNITS[unit]}`;
}

export class Progress {
  private readonly tty: boolean;
  private readonly nowMs: () => number;
  private doneBytes = 0;
  private drawnAtMs = -Infinity;
  /** Off a terminal: the last step reported, in PLAIN_STEP_PERCENT units. */
  private stepReported = 0;
  private finished = false;

  constructor(private readonly opts: ProgressOptions) {
    this.tty = opts.stream.isTTY === true;
    this.nowMs = opts.nowMs ?? (() => performance.now());
    if (!this.tty) opts.stream.write(`${opts.label}: ${opts.totalBytes === undefined ? "started" : `0% of ${formatBytes(opts.totalBytes)}`}\n`);
    else this.draw();
  }

  /** The transfer has moved `doneBytes` in all. */
  update(doneBytes: number): void {
    if (this.finished) return;
    this.doneBytes = doneBytes;
    if (this.tty) {
      if (this.nowMs() - this.drawnAtMs >= REDRAW_INTERVAL_MS) this.draw();
      return;
    }
    const total = this.opts.totalBytes;
    if (total === undefined || total === 0) return;
    const step = Math.floor((Math.min(doneBytes, total) / total) * 100 / PLAIN_STEP_PERCENT);
    // 100% is finish()'s to say.
    if (step > this.stepReported && step * PLAIN_STEP_PERCENT < 100) {
      this.stepReported = step;
      this.opts.stream.write(`${this.opts.label}: ${step * PLAIN_STEP_PERCENT}% (${formatBytes(doneBytes)} of ${formatBytes(total)})\n`);
    }
  }

  /** The transfer is over; `note` says what comes next, if anything (for example, waiting for the cluster). */
  finish(note?: string): void {
    if (this.finished) return;
    this.finished = true;
    if (this.tty) {
      this.doneBytes = this.opts.totalBytes ?? this.doneBytes;
      this.draw();
      this.opts.stream.write("\n");
    } else {
      this.opts.stream.write(`${this.opts.label}: 100% (${formatBytes(this.opts.totalBytes ?? this.doneBytes)})\n`);
    }
    if (note !== undefined) this.opts.stream.write(`${note}\n`);
  }

  /** The transfer failed: end the bar's line so the error starts on its own. */
  abandon(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.tty) this.opts.stream.write("\n");
  }

  private draw(): void {
    this.drawnAtMs = this.nowMs();
    const total = this.opts.totalBytes;
    let line: string;
    if (total === undefined || total === 0) {
      line = `${this.opts.label} ${formatBytes(this.doneBytes)}`;
    } else {
      const fraction = Math.min(1, this.doneBytes / total);
      const filled = Math.round(fraction * BAR_CELLS);
      line = `${this.opts.label} [${"#".repeat(filled)}${"-".repeat(BAR_CELLS - filled)}] ${Math.floor(fraction * 100)}% ${formatBytes(this.doneBytes)} of ${formatBytes(total)}`;
    }
    // Back to the line's start, the line, then clear whatever a longer earlier line left.
    this.opts.stream.write(`\r${line}\x1b[K`);
  }
}
