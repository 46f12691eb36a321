/**
 * s3rver in a process of its own, for benchmarks that must not share a
 * runtime (CPU, GC, memory) with the server: serves a bucket `addons` from
 * the directory given as the first argument on 127.0.0.1 (a free port),
 * prints `{"port": N}` as one line on stdout, and stops when its stdin
 * closes or on SIGTERM/SIGINT.
 *
 * @example Start it and read the port
 * ```sh
 * deno run -A scripts/_s3rver_process.ts /tmp/s3data
 * # {"port":40123}
 * ```
 *
 * @module
 */

const dir = Deno.args[0];
if (!dir) {
  console.error("usage: _s3rver_process.ts DIR");
  Deno.exit(2);
}

const { default: S3rver } = await import("s3rver");
await Deno.mkdir(dir, { recursive: true });
const server = new S3rver({
  port: 0,
  address: "127.0.0.1",
  silent: true,
  directory: dir,
  configureBuckets: [{ name: "addons" }],
});
const info = await server.run() as { port: number };
console.log(JSON.stringify({ port: info.port }));

let stopping = false;
async function _stop(): Promise<never> {
  if (!stopping) {
    stopping = true;
    await server.close().catch(() => {});
  }
  Deno.exit(0);
}

Deno.addSignalListener("SIGTERM", _stop);
Deno.addSignalListener("SIGINT", _stop);
// The parent holds our stdin; when it goes away (or closes it), stop.
const buf = new Uint8Array(64);
while ((await Deno.stdin.read(buf)) !== null) { /* ignore input */ }
await _stop();
