/**
 * `addon-agent publish --store URL --key K FILE` (upload an artifact to a
 * NATS object store or S3) and `addon-agent control-plane --publish URL`
 * (write every agent's document to NATS KV or S3, again on every catalog
 * change), SPEC 14.
 *
 * @module
 */

import { log, readFileBounded } from "../common/mod.ts";
import {
  MAX_CATALOG_BYTES,
  openTarget,
  parseCatalog,
  parsePublishUrl,
  publishCatalog,
  PublishUrlError,
  type Target,
  type TargetOptions,
  textDigest,
} from "../control_plane/mod.ts";
import { DecodeError } from "../protocol/mod.ts";
import { EXIT, UsageError } from "./common.ts";
import { ProgressLines } from "./progress.ts";

/** How often the publisher looks at the catalog file. */
const CATALOG_CHECK_MS = 1_000;

function _target(url: string, flag: string) {
  try {
    return parsePublishUrl(url);
  } catch (e) {
    if (e instanceof PublishUrlError) throw new UsageError(`${flag}: ${e.message}`);
    throw e;
  }
}

/** Upload `file` under `key` to the store at `store`; prints `{"key","size","store"}`. */
export async function publishCommand(
  opts: { store: string; key: string; file: string; target: TargetOptions },
): Promise<number> {
  const url = _target(opts.store, "--store");
  try {
    await Deno.stat(opts.file);
  } catch (e) {
    throw new UsageError(`${opts.file}: cannot read it: ${(e as Error).message}`);
  }
  const target = await openTarget(url, opts.target);
  // At a terminal, one line of progress (SPEC 16); never in a pipe or with JSON logs.
  const view = ProgressLines.forTerminal(false);
  const name = opts.key.slice(opts.key.lastIndexOf("/") + 1) || opts.key;
  let outcome = "failed";
  try {
    const size = await target.upload(
      opts.key,
      opts.file,
      view ? (bytes, total) => view.update(name, "", bytes, total) : undefined,
    );
    outcome = "uploaded";
    view?.finish(name, outcome);
    view?.stop();
    console.log(JSON.stringify({ store: target.describe, key: opts.key, size }));
    return EXIT.ok;
  } finally {
    if (outcome !== "uploaded") {
      view?.finish(name, outcome);
      view?.stop();
    }
    await target.close();
  }
}

async function _readCatalog(path: string) {
  // Counted while reading, like the server's catalog (SPEC 12).
  const text = await readFileBounded(path, MAX_CATALOG_BYTES);
  return { text, catalog: parseCatalog(text, path) };
}

/**
 * Publish the catalog to `url`, then watch the file and publish again when
 * it changes (until SIGINT/SIGTERM, or once with `once`). A catalog that
 * stops decoding is logged and skipped; the last published documents stay.
 */
export async function controlPlanePublish(opts: {
  catalog: string;
  publish: string;
  platform: { os: string; arch: string };
  target: TargetOptions;
  once: boolean;
}): Promise<number> {
  const url = _target(opts.publish, "--publish");
  let first;
  try {
    first = await _readCatalog(opts.catalog);
  } catch (e) {
    if (e instanceof DecodeError) throw new UsageError(e.message, { cause: e });
    throw new UsageError(`--catalog ${opts.catalog}: cannot read it: ${(e as Error).message}`);
  }
  const target: Target = await openTarget(url, opts.target);
  try {
    const known = await target.documents();
    const r = await publishCatalog(target, first.catalog, opts.platform, known);
    if (opts.once) {
      console.log(JSON.stringify(r));
      return EXIT.ok;
    }
    let digest = textDigest(first.text);
    let stopped = false;
    let wake: () => void = () => {};
    const stop = () => {
      stopped = true;
      wake();
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    let lastError = "";
    while (!stopped) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, CATALOG_CHECK_MS);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      if (stopped) break;
      try {
        // Bounded like the first read (SPEC 12): a catalog that grew to gigabytes is refused.
        const text = await readFileBounded(opts.catalog, MAX_CATALOG_BYTES);
        if (textDigest(text) === digest) continue;
        const catalog = parseCatalog(text, opts.catalog);
        await publishCatalog(target, catalog, opts.platform, known);
        digest = textDigest(text);
        lastError = "";
      } catch (e) {
        const msg = (e as Error).message;
        if (msg !== lastError) {
          log.warn("catalog not published; the last published documents stay", { error: msg });
        }
        lastError = msg;
      }
    }
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    return EXIT.ok;
  } finally {
    await target.close();
  }
}
