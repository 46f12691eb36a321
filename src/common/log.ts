/**
 * Structured logging: one JSON object a line on stderr (or `text` for people).
 *
 * @example Log about one add-on
 * ```ts
 * log.info("staged", { addon_id: "net-probe", version: "1.4.2" });
 * ```
 *
 * @module
 */

/** How serious a log line is. */
export type Level = "debug" | "info" | "warn" | "error";

/** Output format of the log. */
export type LogFormat = "json" | "text";

/** Extra fields of a log line; `addon_id` tags lines about one add-on. */
export type Fields = Record<string, unknown> & { addon_id?: string };

const encoder = new TextEncoder();
const ORDER: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

let format: LogFormat = "json";
let minLevel: Level = "info";
let sink: (line: string) => void = (line) => {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
};

/** Choose the log format and the lowest level written. */
export function configureLog(opts: { format?: LogFormat; level?: Level }): void {
  if (opts.format) format = opts.format;
  if (opts.level) minLevel = opts.level;
}

/** The log format in use. */
export function logFormat(): LogFormat {
  return format;
}

/** Send log lines somewhere else (tests); returns a function that restores stderr. */
export function captureLog(fn: (line: string) => void): () => void {
  const old = sink;
  sink = fn;
  return () => {
    sink = old;
  };
}

function _write(level: Level, msg: string, fields: Fields = {}): void {
  if (ORDER[level] < ORDER[minLevel]) return;
  const ts = new Date().toISOString();
  if (format === "json") {
    sink(JSON.stringify({ ts, level, msg, ...fields }, _errorReplacer));
    return;
  }
  const { addon_id, ...rest } = fields;
  const extra = Object.entries(rest).map(([k, v]) =>
    `${k}=${typeof v === "string" ? v : JSON.stringify(v, _errorReplacer)}`
  );
  sink(escapeControl(
    `${ts} ${level.toUpperCase().padEnd(5)} ${addon_id ? `[${addon_id}] ` : ""}${msg}${
      extra.length ? " " + extra.join(" ") : ""
    }`,
  ));
}

/** C0 and C1 controls, DEL, line and paragraph separators, and bidi overrides. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * `s` with every control character written as an escape (`\n`, `\t`, `\r`, `\xHH`,
 * `\uHHHH`), so text an add-on or a server sent can neither split a log line, nor
 * drive the terminal that shows it (SPEC 12: text logs escape control characters).
 *
 * @example
 * ```ts
 * import { escapeControl } from "./log.ts";
 * escapeControl("a\0b\x1b[31m\n"); // "a\\x00b\\x1b[31m\\n"
 * ```
 */
export function escapeControl(s: string): string {
  return s.replace(CONTROL, (c) => {
    if (c === "\n") return "\\n";
    if (c === "\t") return "\\t";
    if (c === "\r") return "\\r";
    const code = c.charCodeAt(0);
    return code < 0x100
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

function _errorReplacer(_key: string, value: unknown): unknown {
  return value instanceof Error ? value.message : value;
}

/** The agent's logger. */
export const log = {
  /** Detail for debugging. */
  debug: (msg: string, fields?: Fields): void => _write("debug", msg, fields),
  /** Normal operation. */
  info: (msg: string, fields?: Fields): void => _write("info", msg, fields),
  /** Something an operator should look at; work goes on. */
  warn: (msg: string, fields?: Fields): void => _write("warn", msg, fields),
  /** Something failed. */
  error: (msg: string, fields?: Fields): void => _write("error", msg, fields),
};
