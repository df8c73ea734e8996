// What the CLI (cli/) and the web console (console/) show that came from the server (names, e-mails,
// reasons, messages, drain errors…) may have been written by another user or a receiver. Raw control
// characters in it would reach the operator's terminal: ESC sequences that retitle the window, clear
// the screen, move the cursor over earlier lines or (on some terminals) answer back as typed input; in
// the console they would print as nothing and hide what the text says. Everything of that kind goes
// out through these functions. (A session's own output and a played recording are the terminal stream
// the user asked for, and pass untouched.)

/** C0 controls (newline and tab included: one value, one line), DEL and the C1 controls (U+0080–U+009F). */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** The text with every control character shown escaped (`\x1b`, `\n`…), so it prints as it reads. */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => NAMED[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * JSON for a terminal: JSON.stringify escapes C0 controls but leaves DEL and C1 raw, and those are
 * escaped here too (`\u009b`), so the text is still the same JSON.
 */
export function printableJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
