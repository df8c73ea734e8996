// The HTTPS body is written byte by byte for speed: it must be the same JSON as the plain form.
import { describe, expect, it } from 'vitest';
import { httpsBody, jsonEvent, sessionMeta, type ShippedEvent } from '../drains/formats.js';

const meta = sessionMeta({
  operationId: 42, accountId: 1, app: 'app "q"', appId: 7, account: 'acc\\ount', userName: 'Jo "JJ" \u00e9', userEmail: 'jo@example.com',
  containerId: 'c'.repeat(64), host: 'host-1',
});

describe('the HTTPS body', () => {
  it('is the JSON array of the events, whatever their text', () => {
    const texts = ['plain line\r\n', 'plain\n', 'no newline', '', '\n', '\r\n', 'quote " and \\ backslash\n', 'tab\there\n', 'bell\u0007\n',
      'héllo ✓ 🚀\n', '\u001b[1;32mgreen\u001b[0m\r\n', 'x'.repeat(16_000)];
    const events: ShippedEvent[] = texts.map((t, i) => ({
      session: meta, seq: i + 1, kind: 'output', stream: i % 2 ? 'stderr' : 'stdout', time: new Date(1_700_000_000_000 + i).toISOString(),
      offset: i * 100, text: null, data: Buffer.from(t),
    }));
    events.push({ session: meta, seq: 99, kind: 'output', stream: 'stdout', time: new Date().toISOString(), offset: 9, text: 'redacted [X]\n', data: Buffer.from('secret\n') });
    events.push({ session: meta, seq: 100, kind: 'session_ended', stream: 'lifecycle', time: new Date().toISOString(), offset: 10, text: '',
      details: { end_reason: 'exit', exit_code: 0, duration_s: 1.5, output_complete: false } });
    events.push({ session: meta, seq: 101, kind: 'output', stream: 'stdout', time: new Date().toISOString(), offset: 2 ** 40, text: null, data: Buffer.from([0xff, 0xfe, 0x0a]) });
    const parsed = JSON.parse(httpsBody(events).toString('utf8')) as Record<string, unknown>[];
    expect(parsed).toEqual(events.map(jsonEvent));
    expect(parsed[0]).toMatchObject({ log: 'plain line', stream: 'stdout', seq: 1, operation_id: 42, app: 'app "q"', operation_user_name: 'Jo "JJ" \u00e9' });
    expect(parsed[12]).toMatchObject({ log: 'redacted [X]' });
    expect(parsed[13]).toMatchObject({ event: 'session_ended', output_complete: false });
    expect(parsed[14]).toMatchObject({ log: '\uFFFD\uFFFD', offset: 2 ** 40 });
  });
});
