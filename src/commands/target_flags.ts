/**
 * The flags `publish` and `control-plane --publish` share: how to reach a
 * NATS server (credentials, TLS) or an S3 store (endpoint, region,
 * addressing), and the platform documents are rendered for; parsed into
 * the publisher's {@linkcode TargetOptions}.
 *
 * @example Turn parsed flags into publisher options
 * ```ts
 * import { targetOptions } from "./target_flags.ts";
 * const opts = targetOptions({ creds: "/etc/pub.creds", "force-path-style": true });
 * console.log(opts.nats?.creds_file); // "/etc/pub.creds"
 * ```
 *
 * @module
 */

import type { TargetOptions } from "../control_plane/mod.ts";
import { UsageError } from "./common.ts";

type Values = Record<string, string | boolean | undefined>;

/** A flag as `main.ts` declares it: its type, argument name and help line. */
export interface TargetFlag {
  type: "string" | "boolean";
  arg?: string;
  help: string;
}

/** How `publish` and `control-plane --publish` reach a NATS server or an S3 store. */
export const TARGET_FLAGS: Record<string, TargetFlag> = {
  creds: { type: "string", arg: "FILE", help: "NATS: a .creds file (JWT and nkey seed)" },
  "nkey-seed-file": { type: "string", arg: "FILE", help: "NATS: an nkey seed file" },
  user: { type: "string", arg: "USER", help: "NATS: user name (with --password-file)" },
  "password-file": { type: "string", arg: "FILE", help: "NATS: the user's password" },
  "ca-file": { type: "string", arg: "FILE", help: "NATS: CA of the server's certificate" },
  "cert-file": { type: "string", arg: "FILE", help: "NATS: client certificate (with --key-file)" },
  "key-file": { type: "string", arg: "FILE", help: "NATS: client certificate's key" },
  endpoint: { type: "string", arg: "URL", help: "S3: endpoint (default: AWS)" },
  region: { type: "string", arg: "REGION", help: "S3: region (us-east-1)" },
  "force-path-style": { type: "boolean", help: "S3: path-style addressing" },
};
/** The usage text of {@linkcode TARGET_FLAGS}. */
export const TARGET_USAGE = "[--creds F | --nkey-seed-file F | --user U --password-file F] " +
  "[--ca-file F] [--cert-file F --key-file F] [--endpoint URL] [--region R] [--force-path-style]";

function _opt(v: Values, name: string): string | undefined {
  const x = v[name];
  return typeof x === "string" && x !== "" ? x : undefined;
}

/** The {@linkcode TARGET_FLAGS} as publisher options (files made absolute). */
export function targetOptions(v: Values): TargetOptions {
  const abs = (p: string | undefined) =>
    p === undefined ? undefined : p.startsWith("/") ? p : `${Deno.cwd()}/${p}`;
  const nats: Record<string, string> = {};
  for (
    const [flag, key] of [
      ["creds", "creds_file"],
      ["nkey-seed-file", "nkey_seed_file"],
      ["password-file", "password_file"],
      ["ca-file", "ca_file"],
      ["cert-file", "cert_file"],
      ["key-file", "key_file"],
    ]
  ) {
    const f = abs(_opt(v, flag!));
    if (f !== undefined) nats[key!] = f;
  }
  const user = _opt(v, "user");
  if (user !== undefined) nats.user = user;
  if ((nats.user === undefined) !== (nats.password_file === undefined)) {
    throw new UsageError("--user and --password-file go together");
  }
  const s3: { endpoint?: string; region?: string; force_path_style?: boolean } = {
    force_path_style: v["force-path-style"] === true,
  };
  const endpoint = _opt(v, "endpoint");
  if (endpoint !== undefined) s3.endpoint = endpoint;
  const region = _opt(v, "region");
  if (region !== undefined) s3.region = region;
  return { nats, s3, statusBucket: _opt(v, "status-bucket") ?? "addon-status" };
}

/** `--platform OS/ARCH` (default `linux/amd64`). */
export function platformFlag(v: Values): { os: string; arch: string } {
  const p = _opt(v, "platform") ?? "linux/amd64";
  const m = /^(linux|darwin)\/(amd64|arm64)$/.exec(p);
  if (!m) {
    throw new UsageError(`--platform must be OS/ARCH like linux/amd64, got ${JSON.stringify(p)}`);
  }
  return { os: m[1]!, arch: m[2]! };
}
