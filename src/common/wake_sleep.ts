/**
 * A sleep that another part of the program can cut short (a stop request
 * must not wait out a backoff).
 *
 * @example
 * ```ts
 * const s = new WakeableSleep();
 * setTimeout(() => s.wake(), 10);
 * await s.sleep(60_000); // returns after ~10 ms
 * ```
 *
 * @module
 */

/** One sleeper at a time; `wake` ends the current sleep early. */
export class WakeableSleep {
  #wake: (() => void) | null = null;

  /** Sleep `ms` milliseconds, or until {@linkcode WakeableSleep.wake}. */
  async sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.#wake = null;
  }

  /** End the current sleep now (no-op when nobody sleeps). */
  wake(): void {
    this.#wake?.();
  }
}
