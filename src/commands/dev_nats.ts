/**
 * `addon-agent dev --nats`: the parts of the demo that run on NATS instead
 * of the HTTP control plane and a filesystem store — a local nats-server
 * with JetStream (when one is installed), the artifact uploaded to its
 * object store, and the catalog published to its KV bucket (SPEC 14).
 *
 * @module
 */

import { parseCatalog } from "../control_plane/mod.ts";
import { openTarget, publishCatalog, type Target } from "../control_plane/mod.ts";
import { UsageError } from "./common.ts";

/** Where Debian (and most packages) install nats-server. */
const CANDIDATES = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"];

/** A local nats-server for the demo, with the publisher's two targets. */
export interface DevNats {
  /** `nats://127.0.0.1:PORT`. */
  url: string;
  /** Upload `file` as `key` to bucket `addon-artifacts`, then publish the catalog to `addon-assignments`. */
  publish(
    key: string,
    file: string,
    catalogPath: string,
    platform: { os: string; arch: string },
  ): Promise<void>;
  /** Stop the server. */
  stop(): Promise<void>;
}

async function _binary(): Promise<string> {
  for (const c of CANDIDATES) {
    try {
      if ((await Deno.stat(c)).isFile) return c;
    } catch { /* next */ }
  }
  throw new UsageError(
    `--nats needs nats-server (looked in ${
      CANDIDATES.join(", ")
    }); install it (apt-get install nats-server)`,
  );
}

/** Start nats-server with JetStream below `dir` on a free loopback port. */
export async function startDevNats(dir: string): Promise<DevNats> {
  const bin = await _binary();
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const child = new Deno.Command(bin, {
    args: ["-js", "-sd", `${dir}/nats`, "-a", "127.0.0.1", "-p", String(port)],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await child.status;
        throw new Error(`nats-server did not listen on 127.0.0.1:${port} within 15 s`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const url = `nats://127.0.0.1:${port}`;
  let artifacts: Target | null = null;
  let documents: Target | null = null;
  let known: Map<string, string> | null = null;
  return {
    url,
    async publish(key, file, catalogPath, platform) {
      artifacts ??= await openTarget({ kind: "nats", server: url, bucket: "addon-artifacts" }, {});
      documents ??= await openTarget(
        { kind: "nats", server: url, bucket: "addon-assignments" },
        { statusBucket: "addon-status" },
      );
      await artifacts.upload(key, file);
      known ??= await documents.documents();
      const catalog = parseCatalog(await Deno.readTextFile(catalogPath), catalogPath);
      await publishCatalog(documents, catalog, platform, known);
    },
    async stop() {
      await artifacts?.close();
      await documents?.close();
      child.kill("SIGTERM");
      await child.status;
    },
  };
}
