/**
 * Live transfer progress at a terminal (SPEC 16): one line per transfer —
 * add-on, version, bytes done / total, percent, rate, time left — redrawn in
 * place at most 10 times a second by `cli-progress`, and finished with the
 * outcome. Log lines written meanwhile appear above the bars.
 *
 * @example Show progress only for a person at a terminal
 * ```ts
 * import { ProgressLines } from "./progress.ts";
 * const view = ProgressLines.forTerminal(false);
 * view?.update("net-probe", "1.4.2", 512, 1024);
 * view?.finish("net-probe", "current");
 * view?.stop();
 * ```
 *
 * @module
 */

import process from "node:process";
import cliProgress from "cli-progress";
import { captureLog, logFormat } from "../common/mod.ts";

const FORMAT = "{addon} {ver}  {done} / {size}  {percentage}%  {rate}  {left}";

interface _Line {
  bar: cliProgress.SingleBar;
  started: number;
}

function _bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function _duration(s: number): string {
  if (!Number.isFinite(s)) return "--";
  const t = Math.ceil(s);
  return t >= 3600
    ? `${Math.floor(t / 3600)}h${String(Math.floor(t / 60) % 60).padStart(2, "0")}m`
    : t >= 60
    ? `${Math.floor(t / 60)}m${String(t % 60).padStart(2, "0")}s`
    : `${t}s`;
}

/** Progress lines for transfers; make one with {@linkcode ProgressLines.forTerminal}. */
export class ProgressLines {
  readonly #bars: cliProgress.MultiBar;
  readonly #lines = new Map<string, _Line>();
  readonly #restoreLog: () => void;
  readonly #now: () => number;

  private constructor(now: () => number) {
    this.#now = now;
    this.#bars = new cliProgress.MultiBar({
      stream: process.stderr,
      format: FORMAT,
      fps: 10,
      hideCursor: false,
      clearOnComplete: false,
      stopOnComplete: false,
      autopadding: true,
      // Keep the terminal's line wrapping on: cli-progress turns it off by default, and a log
      // line wider than the terminal then loses its tail under the last column
      // ("fetched=3145728" read "fetched=38"). Bars are cut to the width instead.
      linewrap: true,
    });
    this.#restoreLog = captureLog((line) => this.#bars.log(line + "\n"));
  }

  /**
   * Progress for a person: `null` in JSON mode (`json` or `--log-format
   * json`) or when stderr is not a terminal, so machines never see it.
   */
  static forTerminal(json: boolean, now: () => number = Date.now): ProgressLines | null {
    if (json || logFormat() === "json" || !Deno.stderr.isTerminal()) return null;
    return new ProgressLines(now);
  }

  /** `bytes` of `total` of the transfer for `id`/`version` are done. */
  update(id: string, version: string, bytes: number, total: number): void {
    let line = this.#lines.get(id);
    if (!line) {
      const bar = this.#bars.create(Math.max(total, 1), 0, this.#payload(id, version, 0, total, 0));
      line = { bar, started: this.#now() };
      this.#lines.set(id, line);
    }
    const secs = Math.max((this.#now() - line.started) / 1000, 0.001);
    line.bar.setTotal(Math.max(total, 1));
    line.bar.update(bytes, this.#payload(id, version, bytes, total, bytes / secs));
  }

  /** End the line for `id` with its outcome (no-op for a transfer never shown). */
  finish(id: string, outcome: string): void {
    const line = this.#lines.get(id);
    if (!line) return;
    line.bar.update({ rate: "", left: outcome });
    line.bar.stop();
  }

  /** Draw the final state and give stderr back to the log. Safe to call twice. */
  stop(): void {
    this.#bars.update(); // a last redraw writes log lines still buffered above the bars
    this.#bars.stop();
    this.#restoreLog();
  }

  #payload(id: string, version: string, bytes: number, total: number, rate: number) {
    return {
      addon: id,
      ver: version,
      done: _bytes(bytes),
      size: _bytes(total),
      rate: `${_bytes(Math.round(rate))}/s`,
      left: bytes >= total ? "" : `${_duration((total - bytes) / Math.max(rate, 1))} left`,
    };
  }
}
