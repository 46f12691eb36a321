/**
 * Bundle fixtures: archives built in the test — good ones with the real
 * `tar`, hostile ones (absolute paths, `..`, devices, links out of the tree)
 * with modern-tar's packer, which writes whatever header it is given.
 *
 * @module
 */

import zlib from "node:zlib";
import { packTar, type TarEntry } from "modern-tar";

/** One entry of a hand-built archive. */
export interface RawEntry {
  name: string;
  type?: "file" | "directory" | "symlink" | "link" | "character-device" | "block-device" | "fifo";
  mode?: number;
  linkname?: string;
  body?: string | Uint8Array;
}

/** A tar of `entries` exactly as given (no checks), uncompressed. */
export function rawTar(entries: RawEntry[]): Promise<Uint8Array> {
  return packTar(entries.map((e): TarEntry => {
    const body = typeof e.body === "string" ? new TextEncoder().encode(e.body) : e.body;
    const type = e.type ?? "file";
    return {
      header: {
        name: e.name,
        type,
        size: type === "file" ? body?.byteLength ?? 0 : 0,
        mode: e.mode ?? (type === "directory" ? 0o755 : 0o644),
        ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      },
      ...(type === "file" ? { body: body ?? new Uint8Array() } : {}),
    };
  }));
}

/** Compress a tar for `format`. */
export function compress(tar: Uint8Array, format: "tar.gz" | "tar.zst"): Uint8Array {
  return new Uint8Array(format === "tar.gz" ? zlib.gzipSync(tar) : zlib.zstdCompressSync(tar));
}

/** A compressed archive of hand-built entries. */
export async function hostileBundle(
  entries: RawEntry[],
  format: "tar.gz" | "tar.zst" = "tar.gz",
): Promise<Uint8Array> {
  return compress(await rawTar(entries), format);
}

/** Archive the contents of `dir` with the real `tar` (`-C dir .`) into `out`. */
export async function tarDir(
  dir: string,
  out: string,
  format: "tar.gz" | "tar.zst",
): Promise<void> {
  const res = await new Deno.Command("tar", {
    args: [
      format === "tar.gz" ? "-czf" : "--zstd",
      ...(format === "tar.zst" ? ["-cf"] : []),
      out,
      "-C",
      dir,
      ".",
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!res.success) throw new Error(`tar failed: ${new TextDecoder().decode(res.stderr)}`);
}

/** A small add-on tree: `bin/hello` prints `lib/greeting.txt` from its own directory. */
export async function writeHelloTree(dir: string, greeting: string): Promise<void> {
  await Deno.mkdir(`${dir}/bin`, { recursive: true });
  await Deno.mkdir(`${dir}/lib`, { recursive: true });
  await Deno.writeTextFile(`${dir}/lib/greeting.txt`, `${greeting}\n`);
  await Deno.writeTextFile(
    `${dir}/bin/hello`,
    '#!/bin/sh\nhere="$(dirname "$0")"\ncat "$here/../lib/greeting.txt"\necho "cwd=$(pwd)"\nexec sleep 300\n',
  );
  await Deno.chmod(`${dir}/bin/hello`, 0o755);
  await Deno.symlink("lib/greeting.txt", `${dir}/greeting`);
}
