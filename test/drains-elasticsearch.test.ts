import { beforeAll, describe, expect, it } from 'vitest';
import { createTenant, runInSession, useTestStack, waitFor } from './support/harness.js';
import {type ReceivedRequest, useHttpsReceiver } from './support/drains-receivers.js';

// No Elasticsearch can be installed here, so this is a faithful `_bulk` endpoint written for the test:
// NDJSON action/document pairs, `create` refusing an existing _id with 409 version_conflict, per-item
// statuses with `errors: true`, 429 es_rejected_execution on chosen items, a whole-request 429, and a
// mapping error (400) on a poisoned document.
class FakeBulk {
  readonly indices = new Map<string, Map<string, Record<string, any>>>();
  readonly seenPipelines = new Set<string | null>();
  readonly authHeaders = new Set<string | undefined>();
  readonly statuses: number[] = [];
  /** Requests carrying session documents: the audit shipper runs on its own beat, and which of the two
   * sends first is the machine's choice, so the staged failures below key on the session's own requests. */
  sessionRequests = 0;
  private rejectedOnce = new Set<string>();

  handle(req: ReceivedRequest): { status: number; body: string } {
    const url = new URL(req.path, 'https://x');
    if (url.pathname !== '/cluster/_bulk') return { status: 404, body: '{"error":"no handler"}' };
    if (!/^application\/(x-ndjson|json)/.test(String(req.headers['content-type']))) {
      return { status: 406, body: '{"error":"Content-Type header is not supported"}' };
    }
    if (!req.body.endsWith('\n')) return { status: 400, body: '{"error":"The bulk request must be terminated by a newline"}' };
    const lines = req.body.split('\n').filter(Boolean);
    const carriesSession = lines.some((line, i) => i % 2 === 0 && !(JSON.parse(line) as { create?: { _id: string } }).create?._id.startsWith('audit-'));
    if (carriesSession) this.sessionRequests++;
    if (carriesSession && this.sessionRequests === 2) return { status: 429, body: '{"error":{"type":"es_rejected_execution_exception"}}' };
    this.seenPipelines.add(url.searchParams.get('pipeline'));
    this.authHeaders.add(req.headers.authorization as string | undefined);
    const items = [];
    for (let i = 0; i < lines.length; i += 2) {
      const action = JSON.parse(lines[i]!) as { create?: { _index: string; _id: string } };
      const doc = JSON.parse(lines[i + 1]!) as Record<string, any>;
      const meta = action.create!;
      const index = this.indices.get(meta._index) ?? new Map();
      this.indices.set(meta._index, index);
      let status = 201;
      let error: unknown;
      if (index.has(meta._id)) {
        status = 409;
        error = { type: 'version_conflict_engine_exception', reason: `[${meta._id}]: version conflict, document already exists` };
      } else if (String(doc.log).includes('POISON')) {
        status = 400;
        error = { type: 'mapper_parsing_exception', reason: 'failed to parse field [log]' };
      } else if (doc.seq % 7 === 3 && !this.rejectedOnce.has(meta._id)) {
        this.rejectedOnce.add(meta._id);
        status = 429;
        error = { type: 'es_rejected_execution_exception', reason: 'rejected execution of coordinating operation' };
      } else {
        index.set(meta._id, doc);
      }
      this.statuses.push(status);
      items.push({ create: { _index: meta._index, _id: meta._id, status, ...(error ? { error } : { result: 'created', _version: 1 }) } });
    }
    const body = JSON.stringify({ took: 3, errors: items.some((it) => it.create.status >= 300), items });
    // The first successful answer is "lost" (a 502 from a proxy after the cluster stored the documents):
    // the retry must count the resulting 409s as delivered.
    if (carriesSession && this.sessionRequests === 1) return { status: 502, body: '<html>Bad Gateway</html>' };
    return { status: 200, body };
  }
}

const stack = useTestStack({ env: { ESSH_DRAIN_BATCH_EVENTS: '20', ESSH_DRAIN_BACKOFF_CAP_S: '1' } });
const rx = useHttpsReceiver((r) => { r.answer = (r) => es.handle(r); });
const es = new FakeBulk();

beforeAll(async () => {
});

describe('an Elasticsearch drain', () => {
  it('creates one document per event with _id <operation_id>:<seq>, retries 429s, counts 409 as delivered, records refusals', async () => {
    const tenant = await createTenant(stack, { plan: 'scale' });
    const d = await stack.api.post(`/accounts/${tenant.account}/log_drains`, stack.adminToken, {
      handle: 'es', drain_type: 'elasticsearch', url: `https://elastic:changeme@127.0.0.1:${rx.port}/cluster`,
      index: 'essh-{app}-{yyyy}.{MM}', pipeline: 'essh-ingest', token: 'api-key-123', ca_cert: rx.cert.cert,
    });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    expect(d.body.url).toBe(`https://****:****@127.0.0.1:${rx.port}/cluster`);

    // A session printing 60 lines through the portal, with a line the cluster cannot map after the 31st.
    const run = await runInSession(stack, tenant, {
      command: ['sh', '-c', 'i=0; while [ $i -lt 60 ]; do echo "doc $i"; [ $i = 30 ] && echo "POISON pill"; i=$((i+1)); done; exit 0'],
    });
    expect(run.exitCode).toBe(0);
    expect(run.stdout.toString().split('\n')).toHaveLength(62);
    const id = run.id;

    const index = `essh-${tenant.app}-${new Date().toISOString().slice(0, 4)}.${new Date().toISOString().slice(5, 7)}`;
    const docs = await waitFor('the ended event in the index', async () => {
      const ix = es.indices.get(index);
      const all = ix ? [...ix.values()].filter((x) => x.operation_id === id) : [];
      return all.some((x) => x.event === 'session_ended') ? all : undefined;
    }, 40_000, 300);

    const ids = [...es.indices.get(index)!.keys()].filter((k) => k.startsWith(`${id}:`));
    const seqs = new Set(docs.map((x) => x.seq as number));
    const max = Math.max(...seqs);
    // Every seq is in the index exactly once, except the refused (poisoned) one.
    const missing = [];
    for (let i = 0; i <= max; i++) if (!seqs.has(i)) missing.push(i);
    expect(missing.length).toBe(1);
    expect(ids.sort()).toEqual([...seqs].map((s) => `${id}:${s}`).sort());
    for (let i = 0; i < 60; i++) expect(docs.some((x) => x.log === `doc ${i}`), `doc ${i}`).toBe(true);
    for (const x of docs) {
      expect(x).toMatchObject({ operation_id: id, operation_user_email: tenant.user.email, app: tenant.app, source: 'ephemeral_session', layer: 'ssh' });
    }
    expect(es.statuses).toContain(409);
    expect(es.statuses).toContain(429);
    expect([...es.seenPipelines]).toEqual(['essh-ingest']);
    expect([...es.authHeaders]).toEqual(['ApiKey api-key-123']);

    // Every other event, the ended one included, and the account's audit events since the drain was
    // made (its own creation among them: docs/contract-departures.md), documents `audit-<id>`. The audit
    // shipper runs on its own beat: its documents may come after the session's last.
    const auditDocsNow = () => [...es.indices.values()].flatMap((ix) => [...ix.keys()]).filter((k) => k.startsWith('audit-'));
    let seen = '';
    const drain = await waitFor('the refusal on the drain and every event delivered', async () => {
      const x = (await stack.api.get(`/log_drains/${d.body.id}`, tenant.token)).body;
      seen = `${JSON.stringify(x.delivery)}, ${auditDocsNow().length} audit documents`;
      return x.delivery.backlog_bytes === 0 && x.delivery.failed_events > 0 && auditDocsNow().length > 0 &&
        x.delivery.delivered_events === max + auditDocsNow().length ? x : undefined;
    }, 20_000, 300).catch((err) => {
      throw new Error(`${(err as Error).message} (last seen: ${seen})`);
    });
    expect(drain.delivery.failed_events).toBe(1);
    const auditDocs = auditDocsNow();
    expect(auditDocs.length).toBeGreaterThan(0);
    expect(drain.delivery.delivered_events).toBe(max + auditDocs.length);
    // last_error is the latest problem (a 429 retry, say); the refusal itself stays listed.
    expect(drain.delivery.last_error_at).toBeTruthy();
    const failures = (await stack.api.get(`/log_drains/${d.body.id}/failures`, tenant.token)).body.items;
    expect(failures).toHaveLength(1);
    const poison = missing[0];
    expect(failures[0]).toMatchObject({ status: 400, events: 1, operation_id: id, first_seq: poison, last_seq: poison });
    expect(failures[0].message).toMatch(new RegExp(`${id}:${poison}: HTTP 400`));
    // What Elasticsearch said is for operators only.
    expect(JSON.stringify(failures)).not.toContain('mapper_parsing_exception');
    const forOperator = (await stack.api.get(`/log_drains/${d.body.id}/failures`, stack.adminToken)).body.items;
    expect(forOperator[0].detail).toMatch(/mapper_parsing_exception/);
  });
});
