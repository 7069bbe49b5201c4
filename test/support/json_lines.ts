// A child process spoken to in JSON lines: one object per line on stdin, one per line back on
// stdout. The xDS fixtures run this way, since @grpc/grpc-js-xds reads its bootstrap once per
// process.

import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";

export class JsonLinesProcess {
  private stdoutBuffer = "";
  /** The last few KiB of its stderr, for failure messages. */
  stderr = "";
  private readonly lines: string[] = [];
  private wake: (() => void) | undefined;
  readonly exited: Promise<number | null>;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    this.exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
    child.stdout.on("data", (chunk: Buffer) => {
      this.stdoutBuffer += chunk.toString();
      let newline: number;
      while ((newline = this.stdoutBuffer.indexOf("\n")) >= 0) {
        this.lines.push(this.stdoutBuffer.slice(0, newline));
        this.stdoutBuffer = this.stdoutBuffer.slice(newline + 1);
      }
      this.wake?.();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4000);
    });
  }

  /** Runs the node script `script` with `args`, and `env` added to this process's environment. */
  static start(script: string, args: readonly string[], env: Readonly<Record<string, string>>): JsonLinesProcess {
    return new JsonLinesProcess(spawn(process.execPath, [script, ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] }));
  }

  /** Sends one request line and waits for the next line back. */
  request<T>(message: object, timeoutMs: number): Promise<T> {
    this.child.stdin.write(`${JSON.stringify(message)}\n`);
    return this.next<T>(timeoutMs);
  }

  /** The next line it writes, parsed; throws if it exits or says nothing within `timeoutMs`. */
  async next<T>(timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.child.exitCode !== null) throw new Error(`the process exited ${this.child.exitCode}: ${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the process said nothing within ${timeoutMs} ms: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 500));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return JSON.parse(this.lines.shift() as string) as T;
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.child.exitCode === null) this.child.kill(signal);
  }
}
