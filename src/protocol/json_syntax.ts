/**
 * Where JSON text stops being JSON, said without quoting it: `JSON.parse`'s
 * own message quotes the text around the error (`Unexpected token 'S',
 * "{"PW":SECRET}" is not valid JSON`), and those bytes may be a secret an
 * operator left unquoted in an override or a token file read by mistake.
 * The position comes from `jsonc-parser` (strict: no comments, no trailing
 * commas), the words from its error code.
 *
 * @example
 * ```ts
 * import { jsonSyntaxError } from "./json_syntax.ts";
 * jsonSyntaxError('{"PW": hunter2}'); // "not valid JSON at line 1 column 8 (invalid symbol)"
 * ```
 *
 * @module
 */

import { parse, type ParseError, printParseErrorCode } from "jsonc-parser";

/**
 * Describe the first syntax error of `text` by line, column and kind, with no
 * byte of `text` in it. For text that is valid JSON says only "not valid JSON".
 */
export function jsonSyntaxError(text: string): string {
  const errors: ParseError[] = [];
  try {
    parse(text, errors, { disallowComments: true, allowTrailingComma: false });
  } catch (e) {
    // jsonc-parser recurses: a million "[" without their "]" overflow the stack.
    if (e instanceof RangeError) return "not valid JSON (nested too deeply to say where)";
    throw e;
  }
  const first = errors[0];
  if (!first) return "not valid JSON";
  const before = text.slice(0, first.offset);
  const line = before.split("\n").length;
  const column = first.offset - (before.lastIndexOf("\n") + 1) + 1;
  const kind = printParseErrorCode(first.error).replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  return `not valid JSON at line ${line} column ${column} (${kind})`;
}
