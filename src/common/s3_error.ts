/**
 * What an AWS SDK (S3) error says, in one line a person can act on: its
 * name, the HTTP status when the server answered, and its message. Used by
 * the S3 source and the S3 store alike.
 *
 * @example
 * ```ts
 * const e = Object.assign(new Error("Access Denied"), {
 *   name: "AccessDenied",
 *   $metadata: { httpStatusCode: 403 },
 * });
 * console.log(describeS3Error(e)); // "AccessDenied (HTTP 403): Access Denied"
 * console.log(s3Status(e)); // 403
 * ```
 *
 * @module
 */

/** The fields of an AWS SDK error this module reads. */
interface _SdkError {
  name?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

/** The HTTP status of the server's answer an SDK error carries, or undefined (none came). */
export function s3Status(e: unknown): number | undefined {
  return (e as _SdkError | null)?.$metadata?.httpStatusCode;
}

/** `Name (HTTP status): message`, leaving out what the error does not carry. Never throws. */
export function describeS3Error(e: unknown): string {
  const err = (e ?? {}) as _SdkError;
  const status = s3Status(e);
  return `${err.name ?? "error"}${status ? ` (HTTP ${status})` : ""}${
    err.message && err.message !== err.name ? `: ${err.message}` : ""
  }`;
}
