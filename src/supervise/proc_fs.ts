/**
 * Reading `/proc` under Deno's permission set: Deno grants `/proc` only to
 * `--allow-all`, so when a direct read is refused the agent asks `cat`
 * (it may run programs anyway; nothing is written).
 *
 * @example
 * ```ts
 * const status = readProcText(`/proc/${Deno.pid}/status`);
 * ```
 *
 * @module
 */

let _direct: boolean | undefined;

/** Whether Deno lets this process read /proc itself (only under --allow-all). */
export function procDirect(): boolean {
  if (_direct === undefined) {
    try {
      Deno.readTextFileSync("/proc/uptime");
      _direct = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotCapable)) throw e;
      _direct = false;
    }
  }
  return _direct;
}

/** A /proc file's text, directly or through `cat`; throws NotFound when it does not exist. */
export function readProcText(path: string): string {
  if (procDirect()) return Deno.readTextFileSync(path);
  const o = new Deno.Command("cat", {
    args: [path],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  })
    .outputSync();
  if (!o.success) throw new Deno.errors.NotFound(path);
  return new TextDecoder().decode(o.stdout);
}
