/**
 * A filesystem object store: object keys are paths below a root directory,
 * which they can never leave (through `..` or through symlinks), and only
 * regular files are served (checked after opening, without blocking on a
 * FIFO or device).
 *
 * The file that was opened is itself proven to lie inside the root before a
 * byte is read: a directory of the store swapped for a symlink between the
 * path check and the open (SPEC 12) would otherwise hand out `/etc/shadow`.
 * On Linux the kernel's own name for the open file (`/proc/self/fd/N`) must
 * lie below the root; elsewhere the open file's device and inode must equal
 * those of the file a second resolution finds inside the root.
 *
 * An object's body is a byte stream: a reader that brings its own buffer
 * (`getReader({ mode: "byob" })`, as the download does) gets the file read
 * straight into it; iterating it yields fresh 1 MiB chunks.
 *
 * @example Open an object
 * ```ts
 * const store = new FilesystemStore("/srv/artifacts");
 * const obj = await store.open("net-probe/1.4.2/net-probe", 0);
 * ```
 *
 * @module
 */

import type fs from "node:fs";
import { openNoFollow } from "../common/mod.ts";
import { type ObjectStore, type OpenedObject, StoreError } from "./types.ts";

const CHUNK = 1 << 20;

/** Reads objects from files below `root`. */
export class FilesystemStore implements ObjectStore {
  /** Serve files below `root`. */
  constructor(readonly root: string) {}

  /** The file path a key names (for messages). */
  describe(key: string): string {
    return `${this.root.replace(/\/+$/, "")}/${key}`;
  }

  /** Open `key` from `offset`; refuses keys that leave the root and non-regular files. */
  async open(key: string, offset: number): Promise<OpenedObject> {
    if (key.startsWith("/") || key.split("/").some((s) => s === ".." || s === "")) {
      throw new StoreError(`object key ${JSON.stringify(key)} may not leave the store`, {
        kind: "refused",
      });
    }
    let root: string;
    let real: string;
    try {
      root = await Deno.realPath(this.root);
    } catch (e) {
      throw new StoreError(`store root ${this.root} is not readable: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    try {
      real = await Deno.realPath(`${root}/${key}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new StoreError(`object ${this.describe(key)} does not exist`, {
          kind: "not_found",
          cause: e,
        });
      }
      throw new StoreError(`cannot open ${this.describe(key)}: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    if (!real.startsWith(root + "/")) {
      throw new StoreError(
        `object key ${JSON.stringify(key)} resolves outside the store (${real})`,
        { kind: "refused" },
      );
    }
    let fh: fs.promises.FileHandle;
    try {
      fh = await openNoFollow(real);
    } catch (e) {
      throw new StoreError(`cannot open ${this.describe(key)}: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    try {
      await _proveInside(fh, root, real);
    } catch (e) {
      await fh.close();
      if (e instanceof StoreError) {
        throw new StoreError(`object key ${JSON.stringify(key)}: ${e.message}`, { kind: e.kind });
      }
      throw new StoreError(`cannot open ${this.describe(key)}: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new StoreError(`${this.describe(key)} is not a regular file`, { kind: "refused" });
    }
    const size = st.size;
    let closed = false;
    const close = () => {
      if (!closed) {
        closed = true;
        fh.close().catch(() => {});
      }
    };
    let pos = offset;
    const source: UnderlyingByteSource = {
      type: "bytes",
      autoAllocateChunkSize: CHUNK,
      async pull(controller: ReadableByteStreamController) {
        const req = controller.byobRequest!;
        const view = req.view!;
        const want = Math.min(view.byteLength, size - pos);
        const { bytesRead } = want > 0
          ? await fh.read(new Uint8Array(view.buffer, view.byteOffset, want), 0, want, pos)
          : { bytesRead: 0 };
        if (bytesRead === 0) {
          close();
          controller.close();
          req.respond(0);
          return;
        }
        pos += bytesRead;
        req.respond(bytesRead);
      },
      cancel: close,
    };
    const body = new ReadableStream(source);
    return { size, body, close };
  }
}

/**
 * Throw a `refused` {@linkcode StoreError} unless the file open as `fh` lies
 * below `root` (a real path): on Linux by the kernel's name for the open file,
 * elsewhere by device and inode against a second resolution of `real`.
 */
async function _proveInside(fh: fs.promises.FileHandle, root: string, real: string): Promise<void> {
  if (Deno.build.os === "linux") {
    const where = await _openPath(fh.fd);
    if (!where.startsWith(root + "/") || where.endsWith(" (deleted)")) {
      throw new StoreError(
        "the file opened lies outside the store (a directory was swapped for a link while it was opened); nothing was read",
        { kind: "refused" },
      );
    }
    return;
  }
  const opened = await fh.stat();
  const again = await Deno.realPath(real);
  const found = await Deno.lstat(again);
  if (!again.startsWith(root + "/") || found.dev !== opened.dev || found.ino !== opened.ino) {
    throw new StoreError(
      "the file opened is not the one inside the store (it changed while it was opened); nothing was read",
      { kind: "refused" },
    );
  }
}

/**
 * The kernel's path of open file descriptor `fd` (`/proc/self/fd/N`). Deno
 * grants `/proc` only to `--allow-all`, so under the agent's permission set
 * `readlink` reads it from `/proc/<pid>/fd/N`.
 */
async function _openPath(fd: number): Promise<string> {
  try {
    return await Deno.readLink(`/proc/self/fd/${fd}`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable) && !(e instanceof Deno.errors.PermissionDenied)) {
      throw e;
    }
  }
  const out = await new Deno.Command("readlink", {
    args: ["--", `/proc/${Deno.pid}/fd/${fd}`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`readlink /proc/${Deno.pid}/fd/${fd}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout).replace(/\n$/, "");
}
