/**
 * The publisher of `bench_fleet.ts` in a process of its own (as it would
 * run in a fleet): publishes a catalog that assigns package `probe` at
 * version V to agents `a0`…`a<N-1>` to `nats://…/fleet` each time a line `V`
 * arrives on stdin, and answers `done <ms>` on stdout.
 *
 * @example
 * ```sh
 * deno run -A scripts/_fleet_publisher.ts nats://127.0.0.1:4222 5000
 * ```
 *
 * @module
 */

import {
  decodeCatalog,
  openTarget,
  parsePublishUrl,
  publishCatalog,
} from "../src/control_plane/mod.ts";
import { configureLog } from "../src/common/mod.ts";

const [url, n] = Deno.args;
if (!url || !n) {
  console.error("usage: _fleet_publisher.ts NATS_URL AGENTS");
  Deno.exit(2);
}
configureLog({ level: "warn" });
const agents = Number(n);
const target = await openTarget(parsePublishUrl(`${url}/fleet`), {});
const known = new Map<string, string>();
const names = Array.from({ length: agents }, (_, i) => `a${i}`);
const encoder = new TextEncoder();
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
let buf = "";
for await (const chunk of lines) {
  buf += chunk;
  let nl;
  while ((nl = buf.indexOf("\n")) >= 0) {
    const version = buf.slice(0, nl).trim();
    buf = buf.slice(nl + 1);
    const t = performance.now();
    const catalog = decodeCatalog({
      packages: { probe: { version, supervision: "config_toggle" } },
      assignments: { agents: Object.fromEntries(names.map((a) => [a, ["probe"]])) },
    });
    await publishCatalog(target, catalog, { os: "linux", arch: "amd64" }, known);
    await Deno.stdout.write(encoder.encode(`done ${(performance.now() - t).toFixed(0)}\n`));
  }
}
await target.close();
