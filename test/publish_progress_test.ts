/**
 * `addon-agent publish` at a terminal (tmux) shows its upload as one
 * progress line that ends with the outcome (SPEC 16); piped, it prints only
 * its JSON result.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { MAIN_TS, randomBytes, runAgent, withTempDir } from "./_helpers.ts";
import { HAVE_NATS, startNats } from "./_nats.ts";

const HAVE_TMUX = (() => {
  try {
    return new Deno.Command("tmux", { args: ["-V"] }).outputSync().code === 0;
  } catch {
    return false;
  }
})();

async function tmux(...args: string[]): Promise<string> {
  const out = await new Deno.Command("tmux", { args, stdout: "piped", stderr: "piped" }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test({
  name: "publish at a terminal shows the upload's progress and outcome; piped, only its JSON",
  ignore: !HAVE_NATS || !HAVE_TMUX,
  fn: () =>
    withTempDir(async (dir) => {
      const nats = await startNats();
      const session = `addon-publish-${crypto.randomUUID().slice(0, 8)}`;
      try {
        await Deno.writeFile(`${dir}/tool`, randomBytes(8 << 20));
        const cmd =
          `${Deno.execPath()} run -A --quiet ${MAIN_TS} publish --store ${nats.url}/art ` +
          `--key tools/1/tool ${dir}/tool > ${dir}/stdout; echo EXIT=$? >> ${dir}/stdout; sleep 60`;
        await tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "20", cmd);
        const deadline = Date.now() + 60_000;
        while (Date.now() < deadline) {
          if ((await Deno.readTextFile(`${dir}/stdout`).catch(() => "")).includes("EXIT=")) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        const screen = await tmux("capture-pane", "-p", "-t", session);
        assertMatch(await Deno.readTextFile(`${dir}/stdout`), /"size":8388608[\s\S]*EXIT=0/);
        assertMatch(screen, /tool +8\.0 MiB \/ 8\.0 MiB +100% +uploaded/, screen);

        const piped = await runAgent([
          "publish",
          "--store",
          `${nats.url}/art`,
          "--key",
          "t2",
          `${dir}/tool`,
        ]);
        assertEquals(piped.code, 0, piped.stderr);
        assertEquals(/%|\r/.test(piped.stderr), false, piped.stderr);
      } finally {
        await tmux("kill-session", "-t", session);
        await nats.stop();
      }
    }),
});
