/**
 * A real nats-server for tests: `/usr/sbin/nats-server -js -sd <dir> -a
 * 127.0.0.1 -p <free port>` (plus an optional config file, for users and
 * permissions), started by the test itself, stopped (and restartable on the
 * same port and store directory) by it.
 *
 * @module
 */

import { freePort } from "./_helpers.ts";

/** Where Debian installs nats-server. */
export const NATS_SERVER = "/usr/sbin/nats-server";

/** A running nats-server. */
export interface NatsFixture {
  port: number;
  url: string;
  /** `http://127.0.0.1:PORT` of the monitoring endpoint (`/connz`, `/varz`). */
  monitor: string;
  /** Kill the server (SIGKILL) and wait for it to exit. */
  kill(): Promise<void>;
  /** Start it again on the same port and store directory. */
  start(): Promise<void>;
  /** Stop it for good. */
  stop(): Promise<void>;
}

async function _waitListening(port: number, child: Deno.ChildProcess): Promise<void> {
  const deadline = Date.now() + 15_000;
  let exited = false;
  child.status.then(() => exited = true);
  while (Date.now() < deadline) {
    if (exited) throw new Error("nats-server exited at start");
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error(`nats-server did not listen on ${port} within 15 s`);
}

/**
 * Start nats-server with JetStream, storing in a temp dir of its own (not
 * below a test's dir, whose marker `killMarked` looks for); `config` is
 * nats-server configuration text.
 */
export async function startNats(config?: string): Promise<NatsFixture> {
  const dir = await Deno.makeTempDir({ prefix: "addon-agent-nats-" });
  const port = freePort();
  const monitorPort = freePort();
  const sd = `${dir}/nats-js`;
  await Deno.mkdir(sd, { recursive: true });
  const args = ["-js", "-sd", sd, "-a", "127.0.0.1", "-p", String(port), "-m", String(monitorPort)];
  if (config !== undefined) {
    const file = `${dir}/nats.conf`;
    await Deno.writeTextFile(file, config);
    args.unshift("-c", file);
  }
  let child: Deno.ChildProcess | null = null;
  const start = async () => {
    child = new Deno.Command(NATS_SERVER, { args, stdout: "null", stderr: "null" }).spawn();
    await _waitListening(port, child);
  };
  const kill = async () => {
    const c = child;
    child = null;
    if (!c) return;
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
    await c.status;
  };
  await start();
  const stop = async () => {
    await kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    monitor: `http://127.0.0.1:${monitorPort}`,
    kill,
    start,
    stop,
  };
}

/** Whether nats-server is installed (tests that need it are ignored where it is not). */
export const HAVE_NATS = (() => {
  try {
    return Deno.statSync(NATS_SERVER).isFile;
  } catch {
    return false;
  }
})();

/** The pid of the nats-server listening on `port` (from /proc). */
export async function serverPid(port: number): Promise<number> {
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
      if (cmd.includes("nats-server") && cmd.split("\0").includes(String(port))) {
        return Number(e.name);
      }
    } catch { /* gone */ }
  }
  throw new Error(`no nats-server on port ${port}`);
}
