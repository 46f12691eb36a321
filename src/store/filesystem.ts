/**
 * A filesystem object store: object keys are paths below a root directory,
 * which they can never leave (through `..` or through symlinks), and only
 * regular files are served (checked after opening, without blocking on a
 * FIFO or device).
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

import fs from "node:fs";
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
      fh = await fs.promises.open(real, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (e) {
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
