/**
 * `addon-agent dev`: the embedded default. In one process: a filesystem
 * store in a temp dir, the reference control plane on loopback, a fresh
 * signing key, an example add-on signed and published, and the agent
 * delivering and supervising it; then version 2 is published so the user
 * watches a rollout, and version 3, which crash-loops, so they watch it
 * rolled back. The example is a bundle (SPEC 15): a tar.gz with the script
 * and a file it reads. Runs until Ctrl-C, or `--for SECONDS`.
 *
 * @module
 */

import { createHash } from "node:crypto";
import zlib from "node:zlib";
import { packTar } from "modern-tar";
import { decodeConfig } from "../config/mod.ts";
import { startControlPlane } from "../control_plane/mod.ts";
import { Daemon } from "../agent/mod.ts";
import { configureLog } from "../common/mod.ts";
import {
  encodeBase64,
  generateKey,
  hostPlatform,
  platformString,
  signStatement,
} from "../protocol/mod.ts";
import { openRuntimeRoot } from "../runtime/mod.ts";
import type { StatusDocument } from "../status/mod.ts";
import { EXIT } from "./common.ts";
import { startDevNats } from "./dev_nats.ts";

const ADDON = "hello";

function _script(version: string, crash: boolean): string {
  if (crash) {
    return [
      "#!/bin/sh",
      `# example add-on, version ${version}: a deliberate bug, it exits at once`,
      'echo "$ADDON_ID $ADDON_VERSION: cannot start (a deliberate bug); exiting 1"',
      "exit 1",
      "",
    ].join("\n");
  }
  return [
    "#!/bin/sh",
    `# example add-on, version ${version}`,
    'cat "$(dirname "$0")/../share/banner.txt"',
    "trap 'echo \"$ADDON_ID $ADDON_VERSION: stopping\"; exit 0' TERM INT",
    "while true; do",
    "  sleep 3 &",
    "  wait $!",
    `  greeting=$(sed -n 's/.*"greeting": *"\\([^"]*\\)".*/\\1/p' "$ADDON_CONFIG_FILE")`,
    '  echo "$ADDON_ID $ADDON_VERSION is alive (greeting: $greeting)"',
    "done",
    "",
  ].join("\n");
}

/** The example as a bundle: `bin/hello` and the `share/banner.txt` it prints, as a tar.gz. */
async function _bundle(version: string, crash: boolean): Promise<Uint8Array> {
  const enc = new TextEncoder();
  const script = enc.encode(_script(version, crash));
  const banner = enc.encode(
    `hello ${version}: a bundle of two files, verified, unpacked and staged before I ran\n`,
  );
  const tar = await packTar([
    { header: { name: "bin/hello", size: script.byteLength, mode: 0o755 }, body: script },
    { header: { name: "share/banner.txt", size: banner.byteLength, mode: 0o644 }, body: banner },
  ]);
  return new Uint8Array(zlib.gzipSync(tar));
}

/** A fresh work dir: a temp dir, or (under the agent's permission set) one below the runtime root. */
async function _workDir(): Promise<string> {
  try {
    return await Deno.makeTempDir({ prefix: "addon-agent-dev-" });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable)) throw e;
  }
  const dir = `/var/lib/addon-agent/dev-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  return dir;
}

function _say(text: string): void {
  console.log(`\n==> ${text}`);
}

/** Run the embedded demo; returns 0 when it was stopped (Ctrl-C or `--for`). */
export async function devCommand(opts: { forSeconds?: number; nats?: boolean }): Promise<number> {
  configureLog({ format: "text" });
  const platform = hostPlatform();
  const dir = await _workDir();
  await Deno.chmod(dir, 0o755);
  let stopRequested = false;
  let wake: () => void = () => {};
  const onSignal = () => {
    stopRequested = true;
    wake();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const deadline = opts.forSeconds !== undefined ? Date.now() + opts.forSeconds * 1000 : Infinity;
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, Math.max(0, Math.min(ms, deadline - Date.now())));
      wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  const done = () => stopRequested || Date.now() >= deadline;

  _say(`addon-agent dev: everything lives in ${dir} and is removed when you stop (Ctrl-C).`);
  const key = await generateKey();
  await Deno.mkdir(`${dir}/keys`);
  await Deno.writeTextFile(`${dir}/keys/signing.key`, encodeBase64(key.secret) + "\n", {
    mode: 0o600,
  });
  _say(
    `1. A publisher signing key was generated. Its public key is trusted by the agent:\n    ${key.publicBase64}`,
  );

  const catalogPath = `${dir}/catalog.json`;
  const fleet = opts.nats ? await startDevNats(dir) : null;
  if (fleet) {
    _say(
      `   --nats: a local nats-server with JetStream runs on ${fleet.url}: the artifact goes to its\n` +
        "    object store (addon-artifacts) and the agent's document to its KV bucket (addon-assignments).",
    );
  }
  const publish = async (version: string, crash = false): Promise<void> => {
    const bytes = await _bundle(version, crash);
    const objectKey = `${ADDON}/${version}/${platform.os}-${platform.arch}/${ADDON}.tar.gz`;
    await Deno.mkdir(`${dir}/store/${objectKey.slice(0, objectKey.lastIndexOf("/"))}`, {
      recursive: true,
    });
    await Deno.writeFile(`${dir}/store/${objectKey}`, bytes);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    const signature = await signStatement(key.secret, {
      addon_id: ADDON,
      version,
      target: platformString(platform),
      sha256,
    });
    const catalog = {
      packages: {
        [ADDON]: {
          version,
          delivery: "pushed_artifact",
          supervision: "agent_sidecar",
          binary_path: `/usr/lib/${ADDON}/${ADDON}`,
          config: { greeting: `hi from ${version}` },
          artifacts: {
            [platformString(platform)]: {
              object_key: objectKey,
              sha256,
              signature,
              format: "tar.gz",
              entrypoint: "bin/hello",
            },
          },
        },
      },
      assignments: { default: [ADDON], agents: { "dev-host": [ADDON] } },
    };
    await Deno.writeTextFile(`${catalogPath}.tmp`, JSON.stringify(catalog, null, 2));
    await Deno.rename(`${catalogPath}.tmp`, catalogPath);
    await fleet?.publish(objectKey, `${dir}/store/${objectKey}`, catalogPath, platform);
    console.log(
      `    published ${ADDON} ${version}: object ${objectKey}\n    sha256 ${sha256}\n    signature ${
        signature.slice(0, 24)
      }…`,
    );
  };

  _say(
    "2. The example add-on 1.0.0, a bundle (tar.gz: a shell script and a file it reads), is signed\n" +
      "    and put in the store.",
  );
  await publish("1.0.0");
  const cp = fleet ? null : await startControlPlane({ catalogPath, listen: "127.0.0.1:0" });
  _say(
    cp
      ? `3. The reference control plane serves the catalog on ${cp.url}`
      : "3. The catalog was published: KV addon-assignments key dev-host holds the agent's document,\n" +
        "    and every later publish is pushed to the agent at once.",
  );

  await Deno.mkdir(`${dir}/root`, { mode: 0o755 });
  const cfg = decodeConfig(
    {
      agent_id: "dev-host",
      runtime_root: `${dir}/root`,
      config_dir: dir,
      ...(fleet
        ? {
          source: { kind: "nats" },
          object_store: { kind: "nats" },
          nats: { servers: [fleet.url] },
        }
        : {
          source: { kind: "control_plane", url: cp!.url, poll_interval_s: 1 },
          object_store: { kind: "filesystem", root: `${dir}/store` },
        }),
      trust: { public_keys: [key.publicBase64], require_signature: true },
    },
    `${dir}/agent.json`,
  );
  await Deno.writeTextFile(`${dir}/agent.json`, JSON.stringify(cfg, null, 2));
  _say(
    `4. The agent starts: it ${
      fleet ? "reads its key in KV" : "polls the control plane"
    }, fetches the artifact, checks its sha256 and\n` +
      "    signature, unpacks it under runtime-root/addons/hello/versions/1.0.0, points `current` at it,\n" +
      "    and runs its entrypoint bin/hello as a supervised sidecar. Its log follows.",
  );
  const root = await openRuntimeRoot(cfg.runtime_root);
  const daemon = await Daemon.create(cfg, root);
  const running = daemon.run();
  let last = "";
  let phase: "1.0.0" | "1.1.0" | "1.2.0" | "done" = "1.0.0";
  const watch = async (): Promise<StatusDocument> => {
    const doc = await daemon.status();
    const a = doc.addons.find((x) => x.addon_id === ADDON);
    const line = a
      ? `${a.state} version ${a.version ?? "-"} (pid ${a.pid ?? "-"}, current -> ${
        a.current ?? "-"
      }, previous -> ${a.previous ?? "-"})`
      : "";
    // A rollback is shown once the last known good runs again (it has a pid), as step 6 says.
    const settled = a?.state === "running" || (a?.state === "rolled_back" && a.pid !== null);
    if (a && line !== last && settled) {
      last = line;
      _say(`status: ${ADDON} is ${line}${a.state === "rolled_back" ? `\n    ${a.message}` : ""}`);
    }
    return doc;
  };
  try {
    while (!done()) {
      const doc = await watch();
      const a = doc.addons.find((x) => x.addon_id === ADDON);
      if (phase === "1.0.0" && a?.state === "running" && a.version === "1.0.0") {
        await sleep(3000);
        if (done()) break;
        _say(
          "5. A rollout: version 1.1.0 is published. The agent will see a new config_version, stage 1.1.0,\n" +
            "    move `previous` to 1.0.0 and `current` to 1.1.0, and restart the add-on once.",
        );
        await publish("1.1.0");
        phase = "1.1.0";
      } else if (phase === "1.1.0" && a?.state === "running" && a.version === "1.1.0") {
        await sleep(3000);
        if (done()) break;
        _say(
          "6. A bad release: version 1.2.0 exits as soon as it starts. The agent restarts it with\n" +
            "    backoff (1, 2, 4, 8 s); after 5 exits within 5 minutes it rolls back: `current` returns\n" +
            "    to 1.1.0, which runs again as the last known good, and 1.2.0 is not tried again.",
        );
        await publish("1.2.0", true);
        phase = "1.2.0";
      } else if (phase === "1.2.0" && a?.state === "rolled_back" && a.pid !== null) {
        _say(
          `7. Done. Try \`addon-agent status --runtime-root ${dir}/root\` in another\n` +
            (cp
              ? `    terminal, or look at the control plane's view: ${cp.url}/v1/agents/dev-host/addons/status\n`
              : "    terminal; its reports are in KV addon-status, key dev-host.\n") +
            "    Press Ctrl-C to stop (add-ons get SIGTERM, the temp dir is removed).",
        );
        phase = "done";
      }
      await sleep(500);
    }
  } finally {
    _say("Stopping the agent and its add-ons.");
    daemon.stop();
    await running;
    root.release();
    await cp?.close();
    await fleet?.stop();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await Deno.remove(dir, { recursive: true });
  }
  return EXIT.ok;
}
