import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  nextRun,
  parseSchedule,
  type Schedule,
  ScheduleError,
  SUPPORTED_SCHEDULES,
} from "../src/protocol/calendar.ts";

const range = (from: number, to: number, step = 1): number[] => {
  const out: number[] = [];
  for (let v = from; v <= to; v += step) out.push(v);
  return out;
};

/** Supported examples: each must also be accepted by `systemd-analyze calendar`. */
const SUPPORTED: [string, { hours: number[]; minutes: number[]; seconds: number[]; utc?: true }][] =
  [
    ["minutely", { hours: range(0, 23), minutes: range(0, 59), seconds: [0] }],
    ["hourly", { hours: range(0, 23), minutes: [0], seconds: [0] }],
    ["daily", { hours: [0], minutes: [0], seconds: [0] }],
    ["Daily", { hours: [0], minutes: [0], seconds: [0] }],
    ["*:0/5", { hours: range(0, 23), minutes: range(0, 55, 5), seconds: [0] }],
    ["*-*-* *:0/5:00", { hours: range(0, 23), minutes: range(0, 55, 5), seconds: [0] }],
    ["*:00/7", { hours: range(0, 23), minutes: range(0, 56, 7), seconds: [0] }],
    ["*:1/20", { hours: range(0, 23), minutes: [1, 21, 41], seconds: [0] }],
    ["*:0/59", { hours: range(0, 23), minutes: [0, 59], seconds: [0] }],
    ["*:15", { hours: range(0, 23), minutes: [15], seconds: [0] }],
    ["*:5", { hours: range(0, 23), minutes: [5], seconds: [0] }],
    ["*:00,30", { hours: range(0, 23), minutes: [0, 30], seconds: [0] }],
    ["*:30,10,10", { hours: range(0, 23), minutes: [10, 30], seconds: [0] }],
    ["08:30", { hours: [8], minutes: [30], seconds: [0] }],
    ["8:5", { hours: [8], minutes: [5], seconds: [0] }],
    ["08:30:15", { hours: [8], minutes: [30], seconds: [15] }],
    ["*-*-* 08:30:00", { hours: [8], minutes: [30], seconds: [0] }],
    ["*-*-* 08:30", { hours: [8], minutes: [30], seconds: [0] }],
    ["8,20:00", { hours: [8, 20], minutes: [0], seconds: [0] }],
    ["8..10:00", { hours: [8, 9, 10], minutes: [0], seconds: [0] }],
    ["0/6:00", { hours: [0, 6, 12, 18], minutes: [0], seconds: [0] }],
    ["*:*:0/30", { hours: range(0, 23), minutes: range(0, 59), seconds: [0, 30] }],
    ["23:59:59", { hours: [23], minutes: [59], seconds: [59] }],
    ["*:0/5 UTC", { hours: range(0, 23), minutes: range(0, 55, 5), seconds: [0], utc: true }],
    ["*-*-* 02:30:00 UTC", { hours: [2], minutes: [30], seconds: [0], utc: true }],
  ];

const REJECTED: [string, string][] = [
  ["", "empty"],
  [" daily", "whitespace"],
  ["daily ", "whitespace"],
  ["*:0/5\n", "whitespace"],
  ["*-*-*  *:0/5", "one space"],
  ["weekly", "HOUR:MINUTE"],
  ["monthly", "HOUR:MINUTE"],
  ["Mon *-*-* 00:00:00", "[*-*-* ]HOUR:MINUTE"],
  ["2024-01-01 00:00:00", "[*-*-* ]HOUR:MINUTE"],
  ["*-*-*", "HOUR:MINUTE"],
  ["*:0/0", "STEP of at least 1"],
  ["*:0/60", "STEP of at least 1"],
  ["*:30/30", "START+STEP at most 59"],
  ["20/4:00", "START+STEP at most 23"],
  ["24:00", "out of range 0-23"],
  ["*:60", "out of range 0-59"],
  ["10..8:00", "backwards"],
  ["8..18/2:00", "is not a value"],
  ["*:*/5", "is not a value"],
  ["*,5:00", "is not a value"],
  ["00:00:30.5", "is not a value"],
  ["*:0/5 Europe/Berlin", "[*-*-* ]HOUR:MINUTE"],
  ["1:2:3:4", "HOUR:MINUTE"],
  ["*:", "is not a value"],
];

function _sched(hours: number[], minutes: number[], seconds: number[], utc = false): Schedule {
  return { source: "(test)", hours, minutes, seconds, utc };
}

/** Run `systemd-analyze calendar`; the iterations are returned as ISO UTC strings. */
async function _systemdCalendar(
  expr: string,
  opts: { base?: Date; iterations?: number; env?: Record<string, string> } = {},
): Promise<{ code: number; output: string; runs: string[] }> {
  const args = ["calendar"];
  if (opts.base) args.push(`--base-time=@${Math.floor(opts.base.getTime() / 1000)}`);
  if (opts.iterations) args.push(`--iterations=${opts.iterations}`);
  args.push(expr);
  const out = await new Deno.Command("systemd-analyze", {
    args,
    env: opts.env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const output = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  // "Next elapse:"/"Iter. #N:" lines are in local time; a following "(in UTC):" line (only
  // printed when local time is not UTC) gives the same instant in UTC.
  const runs: (string | null)[] = [];
  for (const line of output.split("\n")) {
    const m = /^\s*(Next elapse|Iter\. #\d+|\(in UTC\)): \w+ (\S+ \S+) (\S+)$/.exec(line);
    if (!m) continue;
    const iso = `${m[2]?.replace(" ", "T")}.000Z`;
    if (m[1] === "(in UTC)") runs[runs.length - 1] = iso;
    else runs.push(m[3] === "UTC" ? iso : null);
  }
  assert(runs.every((r) => r !== null), `could not read UTC times from:\n${output}`);
  return { code: out.code, output, runs: runs as string[] };
}

function _chain(s: Schedule, base: Date, n: number): string[] {
  const out: string[] = [];
  let t = base;
  for (let i = 0; i < n; i++) {
    t = nextRun(s, t);
    out.push(t.toISOString());
  }
  return out;
}

Deno.test("parseSchedule() accepts the documented subset", async (t) => {
  for (const [expr, want] of SUPPORTED) {
    await t.step(JSON.stringify(expr), () => {
      const s = parseSchedule(expr);
      assertEquals(
        { hours: s.hours, minutes: s.minutes, seconds: s.seconds, utc: s.utc },
        { ...want, utc: want.utc ?? false },
      );
      assertEquals(s.source, expr);
    });
  }
  await t.step("the SPEC example is in the subset", () => {
    parseSchedule("*-*-* *:0/5:00");
    assert(SUPPORTED_SCHEDULES.includes("*-*-* *:0/5:00"));
  });
});

Deno.test("parseSchedule() refuses everything else, naming the expression", async (t) => {
  for (const [expr, reason] of REJECTED) {
    await t.step(JSON.stringify(expr), () => {
      const e = assertThrows(() => parseSchedule(expr), ScheduleError);
      assert(e.message.includes(JSON.stringify(expr)), `names the expression: ${e.message}`);
      assert(e.message.includes(reason), `says "${reason}": ${e.message}`);
      assert(e.message.includes(SUPPORTED_SCHEDULES), "says what is supported");
      assertEquals(e.expression, expr);
    });
  }
});

Deno.test("nextRun() finds the next matching time strictly after", async (t) => {
  const at = (d: number, h: number, m: number, s = 0, ms = 0) => new Date(2024, 0, d, h, m, s, ms);
  await t.step("every 5 minutes", () => {
    const s = parseSchedule("*:0/5");
    assertEquals(nextRun(s, at(1, 10, 7)).getTime(), at(1, 10, 10).getTime());
    assertEquals(nextRun(s, at(1, 10, 10)).getTime(), at(1, 10, 15).getTime(), "strictly after");
    assertEquals(nextRun(s, at(1, 10, 9, 59, 999)).getTime(), at(1, 10, 10).getTime());
    assertEquals(nextRun(s, at(1, 23, 58)).getTime(), at(2, 0, 0).getTime(), "across midnight");
  });
  await t.step("daily at 08:30", () => {
    const s = parseSchedule("08:30");
    assertEquals(nextRun(s, at(1, 8, 0)).getTime(), at(1, 8, 30).getTime());
    assertEquals(nextRun(s, at(1, 8, 30)).getTime(), at(2, 8, 30).getTime());
    assertEquals(nextRun(s, at(31, 9, 0)).getTime(), new Date(2024, 1, 1, 8, 30).getTime());
  });
  await t.step("hourly at :15 and a minute list", () => {
    assertEquals(nextRun(parseSchedule("*:15"), at(1, 10, 15)).getTime(), at(1, 11, 15).getTime());
    assertEquals(
      nextRun(parseSchedule("*:00,30"), at(1, 10, 0, 1)).getTime(),
      at(1, 10, 30).getTime(),
    );
  });
  await t.step("UTC schedules ignore the local time zone", () => {
    const s = parseSchedule("*-*-* 02:30:00 UTC");
    const next = nextRun(s, new Date(Date.UTC(2024, 11, 31, 3, 0)));
    assertEquals(next.toISOString(), "2025-01-01T02:30:00.000Z");
  });
  await t.step("every second of the day is reachable", () => {
    const s = _sched(range(0, 23), range(0, 59), range(0, 59));
    assertEquals(nextRun(s, at(1, 23, 59, 59)).getTime(), at(2, 0, 0).getTime());
  });
  await t.step("an invalid Date is refused", () => {
    assertThrows(() => nextRun(parseSchedule("daily"), new Date(NaN)), RangeError);
  });
});

Deno.test("parseSchedule()/nextRun() agree with systemd-analyze calendar", async (t) => {
  const base = new Date(Date.UTC(2024, 1, 28, 22, 13, 20)); // crosses a leap day
  for (const [expr] of SUPPORTED) {
    await t.step(JSON.stringify(expr), async () => {
      const res = await _systemdCalendar(expr, { base, iterations: 6 });
      assertEquals(res.code, 0, `systemd-analyze calendar rejected it:\n${res.output}`);
      assertEquals(_chain(parseSchedule(expr), base, 6), res.runs);
    });
  }
  await t.step("the cross-check itself can fail", async () => {
    const res = await _systemdCalendar("*:0/5", { base, iterations: 3 });
    assert(JSON.stringify(_chain(parseSchedule("*:0/10"), base, 3)) !== JSON.stringify(res.runs));
    assertEquals((await _systemdCalendar("not a schedule")).code !== 0, true);
  });
});

Deno.test("nextRun() follows systemd across DST changes (Europe/Berlin)", async () => {
  const exprs = ["*:0/15", "02:30", "*:00,30", "hourly", "*:0/15 UTC"];
  const bases = ["2024-03-30T23:40:00Z", "2024-03-31T00:40:00Z", "2024-10-26T23:40:00Z"];
  const env = { TZ: "Europe/Berlin" };
  // The test process's time zone is fixed at start: compute in a child with TZ set.
  const script = `
    import { nextRun, parseSchedule } from ${
    JSON.stringify(import.meta.resolve("../src/protocol/calendar.ts"))
  };
    const out = {};
    for (const e of ${JSON.stringify(exprs)}) for (const b of ${JSON.stringify(bases)}) {
      let t = new Date(b); const runs = [];
      for (let i = 0; i < 8; i++) { t = nextRun(parseSchedule(e), t); runs.push(t.toISOString()); }
      out[e + " @ " + b] = runs;
    }
    console.log(JSON.stringify(out));`;
  const child = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", script],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(child.code, 0, new TextDecoder().decode(child.stderr));
  const ours = JSON.parse(new TextDecoder().decode(child.stdout)) as Record<string, string[]>;
  for (const e of exprs) {
    for (const b of bases) {
      const res = await _systemdCalendar(e, { base: new Date(b), iterations: 8, env });
      assertEquals(res.code, 0, res.output);
      assertEquals(ours[`${e} @ ${b}`], res.runs, `${e} after ${b}`);
    }
  }
});
