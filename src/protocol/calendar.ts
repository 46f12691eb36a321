/**
 * A documented subset of systemd's `OnCalendar=` syntax (systemd.time(7)):
 * the `schedule` of `ephemeral_helper` add-ons (run by the agent) and of
 * `systemd_timer` add-ons (passed verbatim to `OnCalendar=`), so both
 * supervision models accept exactly the same expressions.
 *
 * Every supported expression describes a set of wall-clock times of day that
 * repeats every day. Like systemd, times are local time unless the expression
 * ends in ` UTC`; a local time that does not exist (skipped by a daylight
 * saving change) is skipped, and a local time that happens twice fires only
 * at its first occurrence (both as systemd 252 does).
 *
 * @example Every five minutes
 * ```ts
 * const s = parseSchedule("*-*-* *:0/5:00");
 * nextRun(s, new Date(2024, 0, 1, 10, 7)); // 2024-01-01 10:10:00 local time
 * ```
 *
 * @module
 */

/** The subset of systemd calendar expressions the agent accepts, in words (for docs and errors). */
export const SUPPORTED_SCHEDULES =
  'a subset of systemd OnCalendar= (systemd.time(7)), in local time unless it ends in " UTC": ' +
  "the shortcuts minutely, hourly and daily, or [*-*-* ]HOUR:MINUTE[:SECOND][ UTC] where " +
  "HOUR (0-23), MINUTE and SECOND (0-59) are each * or a comma list of values (8), ranges " +
  "(8..18) and repetitions (START/STEP = START, START+STEP, ... up to the maximum, with " +
  "START+STEP within range), and SECOND defaults to 00; e.g. *:0/5 or *-*-* *:0/5:00 (every " +
  "5 minutes), *:15 (hourly at :15), *:00,30, 08:30 or *-*-* 08:30:00 (daily); not supported: " +
  "dates, weekdays, weekly/monthly/yearly, stepped ranges (8..18/2), time zones other than " +
  "UTC, fractional seconds";

/** A parsed schedule: the times of day (sorted, unique) at which it fires, every day. */
export interface Schedule {
  /** The expression as given (what `OnCalendar=` receives). */
  readonly source: string;
  /** Hours 0-23. */
  readonly hours: readonly number[];
  /** Minutes 0-59. */
  readonly minutes: readonly number[];
  /** Seconds 0-59. */
  readonly seconds: readonly number[];
  /** True when the expression ends in ` UTC`; otherwise local time. */
  readonly utc: boolean;
}

/** A schedule expression outside the supported subset. */
export class ScheduleError extends Error {
  /** Make the error for `expression`, saying why and what is supported. */
  constructor(readonly expression: string, reason: string) {
    super(
      `schedule ${JSON.stringify(expression)} is not supported: ${reason}; ` +
        `supported: ${SUPPORTED_SCHEDULES}`,
    );
    this.name = "ScheduleError";
  }
}

const SHORTCUTS: Record<string, string> = {
  minutely: "*:*:00",
  hourly: "*:00:00",
  daily: "00:00:00",
};

const ITEM = /^(\d{1,2})(?:\/(\d{1,2})|\.\.(\d{1,2}))?$/;

/** Parse a schedule expression; throws {@linkcode ScheduleError} naming it and the supported subset. */
export function parseSchedule(s: string): Schedule {
  if (s === "") throw new ScheduleError(s, "it is empty");
  if (s.trim() !== s) throw new ScheduleError(s, "leading or trailing whitespace");
  const shortcut = SHORTCUTS[s.toLowerCase()];
  const tokens = (shortcut ?? s).split(" ");
  if (tokens.includes("")) throw new ScheduleError(s, "fields must be separated by one space");
  let utc = false;
  if (tokens.length > 1 && tokens[tokens.length - 1] === "UTC") {
    utc = true;
    tokens.pop();
  }
  if (tokens.length > 1 && tokens[0] === "*-*-*") tokens.shift();
  const time = tokens[0];
  if (tokens.length !== 1 || time === undefined) {
    throw new ScheduleError(s, "only [*-*-* ]HOUR:MINUTE[:SECOND][ UTC] is understood");
  }
  const parts = time.split(":");
  if (parts.length < 2 || parts.length > 3) {
    throw new ScheduleError(s, `${JSON.stringify(time)} is not HOUR:MINUTE or HOUR:MINUTE:SECOND`);
  }
  const [h = "", m = "", sec = "00"] = parts;
  return {
    source: s,
    hours: _component(s, h, 23, "hour"),
    minutes: _component(s, m, 59, "minute"),
    seconds: _component(s, sec, 59, "second"),
    utc,
  };
}

function _component(expr: string, text: string, max: number, what: string): number[] {
  if (text === "*") return Array.from({ length: max + 1 }, (_, i) => i);
  const out = new Set<number>();
  for (const item of text.split(",")) {
    const match = ITEM.exec(item);
    if (!match) {
      throw new ScheduleError(
        expr,
        `${what} ${JSON.stringify(item)} is not a value, START/STEP or A..B`,
      );
    }
    const start = Number(match[1]);
    const step = match[2] === undefined ? undefined : Number(match[2]);
    const stop = match[3] === undefined ? undefined : Number(match[3]);
    if (start > max || (stop !== undefined && stop > max)) {
      throw new ScheduleError(expr, `${what} ${JSON.stringify(item)} is out of range 0-${max}`);
    }
    if (step !== undefined) {
      if (step < 1 || start + step > max) {
        throw new ScheduleError(
          expr,
          `${what} repetition ${JSON.stringify(item)} needs a STEP of at least 1 with ` +
            `START+STEP at most ${max}`,
        );
      }
      for (let v = start; v <= max; v += step) out.add(v);
    } else if (stop !== undefined) {
      if (start > stop) {
        throw new ScheduleError(expr, `${what} range ${JSON.stringify(item)} runs backwards`);
      }
      for (let v = start; v <= stop; v++) out.add(v);
    } else {
      out.add(start);
    }
  }
  return [...out].sort((a, b) => a - b);
}

/** The first time strictly after `after` at which `schedule` fires (local time unless `utc`). */
export function nextRun(schedule: Schedule, after: Date): Date {
  const t0 = after.getTime();
  if (Number.isNaN(t0)) throw new RangeError("nextRun: `after` is an invalid Date");
  const { utc } = schedule;
  const y = utc ? after.getUTCFullYear() : after.getFullYear();
  const mo = utc ? after.getUTCMonth() : after.getMonth();
  const d = utc ? after.getUTCDate() : after.getDate();
  const at = (day: number, h: number, m: number, s: number): number =>
    utc ? Date.UTC(y, mo, d + day, h, m, s) : new Date(y, mo, d + day, h, m, s).getTime();
  const lastMinute = schedule.minutes[schedule.minutes.length - 1] ?? 59;
  // Every day has each supported time of day except around a DST change, so
  // a match is always found within two days; eight is a generous bound.
  for (let day = 0; day < 8; day++) {
    for (const h of schedule.hours) {
      if (at(day, h, lastMinute, 59) <= t0) continue;
      for (const m of schedule.minutes) {
        for (const s of schedule.seconds) {
          const t = at(day, h, m, s);
          if (t <= t0) continue;
          if (!utc) {
            // A local time skipped by a DST change comes back shifted: skip it, as systemd does.
            const check = new Date(t);
            if (check.getHours() !== h || check.getMinutes() !== m || check.getSeconds() !== s) {
              continue;
            }
          }
          return new Date(t);
        }
      }
    }
  }
  throw new Error(`schedule ${JSON.stringify(schedule.source)} has no time after ${after}`);
}
