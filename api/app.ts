import express, { type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import { authenticate, type Principal } from '../services/auth.js';
import { ApiError } from '../services/errors.js';
import { bearerMatches, type Metrics } from '../lib/metrics.js';
import type { Exposition } from '../lib/metrics-server.js';
import { DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT } from '../services/pages.js';
import * as s from './schemas.js';
import { RawResponse, type ApiDeps, type Route, type RouteAdder } from './route.js';
import { registerAdminRoutes } from './routes/admin.js';
import { registerSessionRoutes } from './routes/sessions.js';

/** The largest JSON body the API reads; a larger one is a 413. */
export const MAX_BODY_BYTES = 64 * 1024;

/** Builds the REST API: thin handlers over the services, validated by the same schemas the OpenAPI document shows. */
export function createApi(deps: ApiDeps) {
  const routes: Route<any, any, any>[] = [];
  const route: RouteAdder = (r) => void routes.push(r as Route<any, any, any>);

  for (const register of [registerSessionRoutes, registerAdminRoutes, ...(deps.extraRoutes ?? [])]) register(route, deps);
  let document: unknown;
  registerMetaRoutes(route, deps, () => (document ??= openApiDocument(routes, deps.version)));
  const ids = new Set<string>();
  for (const r of routes) {
    if (ids.has(r.operationId)) throw new Error(`two routes with operationId ${r.operationId}`);
    ids.add(r.operationId);
  }

  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  // Only the listed proxies: express then takes the X-Forwarded-For address nearest the peer that is not one of them.
  if (deps.trustProxy?.length) app.set('trust proxy', deps.trustProxy);
  // Only a route that takes a body reads one (a GET's body is never read).
  const json = express.json({ limit: MAX_BODY_BYTES, strict: true, type: () => true });
  // Every request's duration, labelled by its route's OpenAPI path (a bounded set), never the raw path.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const end = deps.metrics.httpDuration.startTimer();
    res.once('finish', () => end({ method: req.method, route: (res.locals.route as string | undefined) ?? 'unmatched', status: String(res.statusCode) }));
    next();
  });

  for (const r of routes) {
    const handler = async (req: Request, res: Response, next: NextFunction) => {
      res.locals.route = r.path;
      try {
        // The source address is the peer's, or what a proxy of ESSH_TRUST_PROXY says it saw: a client cannot name another with X-Forwarded-For.
        const principal = r.auth === false
          ? (undefined as unknown as Principal)
          : { ...(await authenticate(deps.db, bearer(req))), sourceAddress: req.ip ?? req.socket.remoteAddress };
        const params = parse(r.params ?? z.object({}), req.params, 'path');
        const query = parse(r.query ?? z.object({}).strict(), req.query, 'query');
        // An empty POST body means "no options": the same as {}.
        const body = r.body ? parse(r.body, req.body ?? {}, 'body') : undefined;
        const result = await r.handler({ principal, params, query, body, req });
        if (r.status === 204) res.status(204).end();
        else if (result instanceof RawResponse) {
          res.status(r.status ?? 200).type(result.contentType);
          if (typeof result.body === 'string' || Buffer.isBuffer(result.body)) res.send(result.body);
          else result.body.pipe(res);
        } else res.status(r.status ?? 200).json(result);
      } catch (err) {
        next(err);
      }
    };
    app[r.method](expressPath(r.path), ...(r.body ? [json] : []), handler);
  }
  for (const page of deps.pages ?? []) {
    app.get(page.path, (_req: Request, res: Response, next: NextFunction) => {
      res.locals.route = page.path;
      next();
    }, page.handler);
  }

  // A known path asked with a method it does not have: 405 and the methods it has (RFC 9110 §15.5.6).
  // OPTIONS is answered with those methods.
  const methodsByPath = new Map<string, Set<string>>();
  const methodsOf = (p: string) => methodsByPath.get(p) ?? methodsByPath.set(p, new Set()).get(p)!;
  for (const r of routes) methodsOf(expressPath(r.path)).add(r.method.toUpperCase());
  for (const page of deps.pages ?? []) methodsOf(page.path).add('GET');
  for (const [p, methods] of methodsByPath) {
    if (methods.has('GET')) methods.add('HEAD');
    methods.add('OPTIONS');
    const allow = [...methods].join(', ');
    app.all(p, (req: Request, res: Response) => {
      res.setHeader('Allow', allow);
      if (req.method === 'OPTIONS') return void res.status(204).end();
      res.status(405).json({
        error: 'method_not_allowed',
        message: `${req.method} is not a method of ${req.path}; it answers ${allow}. See GET /openapi.json for the API.`,
      });
    });
  }

  app.use((req: Request, res: Response) => {
    res.status(404).json({ error: 'not_found', message: `No route ${req.method} ${req.path}; see GET /openapi.json for the API.` });
  });
  // express recognises an error handler by its four parameters.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = toApiError(err);
    // essh's own refusals (no host has room: 503) are the system working, a line without a stack; anything
    // else is a fault.
    if (e.status >= 500 && err instanceof ApiError) deps.log.warn({ status: e.status, code: e.code, method: req.method, path: req.path, message: e.message }, 'request refused');
    else if (e.status >= 500) deps.log.error({ err, method: req.method, path: req.path }, 'request failed');
    if (e.code === 'plan_limit' || e.code === 'rate_limited') {
      const retry = (e.details?.retry_after_s as number | undefined) ?? undefined;
      if (retry) res.setHeader('Retry-After', String(retry));
    }
    res.status(e.status).json({ error: e.code, message: e.message, ...(e.details ?? {}) });
  });

  return { app, routes };
}

const expressPath = (openApiPath: string) => openApiPath.replace(/\{(\w+)\}/g, ':$1');

/** /healthz and /openapi.json: no token needed; /metrics: the metrics token (not an API token). */
function registerMetaRoutes(route: RouteAdder, deps: ApiDeps, document: () => unknown) {
  route({
    method: 'get', path: '/healthz', operationId: 'getHealth', tag: 'meta', summary: 'Liveness', auth: false, response: s.healthSchema,
    handler: async () => ({ ok: true, version: deps.version }),
  });
  const exposition: Exposition = deps.exposition ?? { contentType: deps.metrics.registry.contentType, text: () => deps.metrics.registry.metrics() };
  route({
    method: 'get', path: '/metrics', operationId: 'getMetrics', tag: 'meta', summary: 'Prometheus metrics', auth: false,
    description: 'For Prometheus, with `Authorization: Bearer <ESSH_METRICS_TOKEN>` (the installation\'s metrics token, not an API ' +
      'token). Without a metrics token configured this port serves no metrics (403): each process serves them on its metrics ' +
      'listener (ESSH_METRICS_HOST:ESSH_METRICS_PORT, loopback by default). See docs/operations.md.',
    errors: [401, 403],
    raw: { contentType: 'text/plain', description: 'The Prometheus text exposition format, version 0.0.4' },
    handler: async ({ req }) => {
      if (!deps.metricsToken) {
        throw new ApiError(403, 'forbidden',
          'This installation serves no metrics on its API: scrape each process\'s metrics listener (ESSH_METRICS_HOST:ESSH_METRICS_PORT), or set ESSH_METRICS_TOKEN and send it as the bearer.');
      }
      if (!bearerMatches(req.headers.authorization, deps.metricsToken)) {
        throw new ApiError(401, 'unauthorized', 'GET /metrics needs Authorization: Bearer <the metrics token> (ESSH_METRICS_TOKEN), not an API token.');
      }
      return new RawResponse(exposition.contentType, await exposition.text());
    },
  });
  route({
    method: 'get', path: '/openapi.json', operationId: 'getOpenApi', tag: 'meta', summary: 'This API, as an OpenAPI 3.1 document', auth: false,
    response: z.looseObject({ openapi: z.string(), info: z.looseObject({}), paths: z.looseObject({}) }),
    handler: async () => document(),
  });
}

function bearer(req: Request): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  if (!m) throw new ApiError(401, 'unauthorized', 'The Authorization header must be "Bearer <token>".');
  return m[1];
}

function parse<T extends z.ZodType>(schema: T, value: unknown, where: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    const at = i.path.length ? `${where}.${i.path.join('.')}` : where;
    // A bad record key (an env variable name, say): zod's own words are "Invalid key in record";
    // the key schema's message says what a valid key is.
    const message = i.code === 'invalid_key' ? (i.issues[0]?.message ?? i.message) : i.message;
    return `${at}: ${message}`;
  });
  const status = where === 'body' ? 422 : 400;
  throw new ApiError(status, 'invalid_request', `Invalid request: ${problems.join('; ')}.`, { problems });
}

function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { type?: string; status?: number; statusCode?: number; message?: string };
  // body-parser's own errors: malformed JSON, a body over the limit, a bad charset.
  if (e?.type === 'entity.parse.failed') return new ApiError(400, 'invalid_request', 'The request body is not valid JSON; send a JSON object.');
  if (e?.type === 'entity.too.large') return new ApiError(413, 'invalid_request', `The request body is larger than ${MAX_BODY_BYTES / 1024} KB; send less.`);
  if (e?.status && e.status >= 400 && e.status < 500) return new ApiError(e.status, 'invalid_request', `The request could not be read: ${e.message}.`);
  return new ApiError(500, 'internal', 'Something went wrong on our side; the error has been logged. Try again, or report it.');
}

// --- /openapi.json ------------------------------------------------------------------------------

const ERROR_RESPONSES: Record<number, { name: string; description: string; headers?: Record<string, unknown> }> = {
  400: { name: 'BadRequest', description: 'invalid_request: a path or query parameter is invalid, or the body is not JSON' },
  401: { name: 'Unauthorized', description: 'unauthorized: no token, or one that is unknown or revoked' },
  403: { name: 'Forbidden', description: 'forbidden: the caller may see the resource but not do this' },
  404: { name: 'NotFound', description: 'not_found: no such resource, or one the caller may not see (the two read alike)' },
  405: {
    name: 'MethodNotAllowed', description: 'method_not_allowed: the path has no such method; Allow lists the ones it has',
    headers: { Allow: { description: 'the methods of the path', schema: { type: 'string' }, required: true } },
  },
  409: { name: 'Conflict', description: 'conflict: the handle or key is taken, or the resource is in a state that forbids this' },
  410: { name: 'Gone', description: 'gone: it existed but is no longer kept' },
  413: { name: 'ContentTooLarge', description: `invalid_request: the body is larger than ${MAX_BODY_BYTES / 1024} KB` },
  422: { name: 'UnprocessableContent', description: 'invalid_request: the body does not match the schema (`problems` names each field), or breaks a rule the schema cannot state' },
  429: {
    name: 'TooManyRequests', description: 'plan_limit (the account is at its concurrent sessions) or rate_limited (too many session creations or recording downloads this minute)',
    headers: { 'Retry-After': { description: 'rate_limited: seconds to wait', schema: { type: 'integer' }, required: false } },
  },
  500: { name: 'InternalError', description: 'internal: an error on our side, logged' },
  503: { name: 'ServiceUnavailable', description: 'unavailable: a part essh needs (Temporal, the host holding a recording) does not answer now; try again' },
};

const TAGS = [
  { name: 'sessions', description: 'Ephemeral sessions and their recordings' },
  { name: 'operations', description: 'Operation records: one per session' },
  { name: 'accounts', description: 'Accounts, their plans and grants' },
  { name: 'stacks', description: 'Stacks: where sessions run' },
  { name: 'apps', description: 'Apps: the container settings sessions start from' },
  { name: 'users', description: 'Users, API tokens and SSH keys' },
  { name: 'log drains', description: 'Where session output is shipped' },
  { name: 'redaction rules', description: 'What is masked before output is shipped or recorded' },
  { name: 'audit', description: "Administrators' changes: who changed what, when, from where" },
  { name: 'hosts', description: 'Stack hosts: capacity, live sessions and cordons (operators)' },
  { name: 'meta', description: 'Health, metrics and this document' },
];

const DESCRIPTION = `Ephemeral shell sessions on durable Temporal workflows.

Authenticate with \`Authorization: Bearer <token>\`. Every error is \`{ "error": "<code>", "message": "<sentence>" }\`
(the Error schema). A path asked with a method it does not have answers 405 with an \`Allow\` header; OPTIONS
answers 204 with the same header.

Lists are paginated by cursor: \`limit\` (1–${MAX_PAGE_LIMIT}, default ${DEFAULT_PAGE_LIMIT}) and \`cursor\`; the answer is
\`{ "items": [...], "next_cursor": "<cursor>" | null }\`. Pass \`next_cursor\` as \`cursor\` for the next page until it is
null. Cursors are opaque, and stable when items are added between two pages.`;

/**
 * The OpenAPI 3.1 document, made from the routes' zod schemas (the ones that validate the requests):
 * the answers' shared shapes are components referred to with `$ref`.
 */
export function openApiDocument(routes: Route<any, any, any>[], version: string) {
  const clean = (js: Record<string, unknown>) => {
    const { $schema: _s, $id: _i, ...rest } = js;
    return rest;
  };
  // Answers: one registry with the components and every route's own answer schema, so that a
  // component inside an answer becomes a $ref.
  const registry = z.registry<{ id: string }>();
  const componentOf = new Map<z.ZodType, string>();
  for (const [name, schema] of s.components) {
    registry.add(schema, { id: name });
    componentOf.set(schema, name);
  }
  const ownAnswer = new Map<Route<any, any, any>, string>();
  for (const r of routes) {
    if (!r.response || componentOf.has(r.response)) continue;
    const id = `__answer_${r.operationId}`;
    registry.add(r.response, { id });
    ownAnswer.set(r, id);
  }
  const converted = z.toJSONSchema(registry, {
    io: 'output', unrepresentable: 'any', uri: (id) => `#/components/schemas/${id}`,
  }).schemas as Record<string, Record<string, unknown>>;
  if (converted.__shared) throw new Error('an answer schema is recursive: give its part a component name');
  const schemas: Record<string, unknown> = {};
  for (const name of componentOf.values()) schemas[name] = clean(converted[name]!);
  const answerSchema = (r: Route<any, any, any>) =>
    componentOf.has(r.response!) ? { $ref: `#/components/schemas/${componentOf.get(r.response!)}` } : clean(converted[ownAnswer.get(r)!]!);
  const requestSchema = (t: z.ZodType) => clean(z.toJSONSchema(t, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>);

  const parametersComponents: Record<string, unknown> = {};
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const parameters: unknown[] = [];
    for (const [where, schema] of [['path', r.params], ['query', r.query]] as const) {
      if (!schema) continue;
      const js = requestSchema(schema) as { properties?: Record<string, { description?: string }>; required?: string[] };
      for (const [name, sch] of Object.entries(js.properties ?? {})) {
        const { description, ...rest } = sch;
        const parameter = {
          name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema: rest,
          ...(description ? { description } : {}),
        };
        // The page parameters are the same on every list.
        if (where === 'query' && (name === 'limit' || name === 'cursor')) {
          const component = name === 'limit' ? 'Limit' : 'Cursor';
          parametersComponents[component] = parameter;
          parameters.push({ $ref: `#/components/parameters/${component}` });
        } else parameters.push(parameter);
      }
    }
    const status = r.status ?? 200;
    const errors = new Set<number>([400, 500, ...(r.errors ?? [])]);
    if (r.auth !== false) errors.add(401);
    if (r.params) errors.add(404);
    if (r.body) {
      errors.add(413);
      errors.add(422);
    }
    const success = status === 204
      ? { description: 'Done' }
      : r.raw
        ? { description: r.raw.description, content: { [r.raw.contentType]: { schema: r.raw.schema ?? { type: 'string' } } } }
        : { description: 'Success', content: { 'application/json': { schema: answerSchema(r) } } };
    if (r.links) {
      (success as Record<string, unknown>).links = Object.fromEntries(Object.entries(r.links).map(([operationId, parameters]) => {
        if (!routes.some((x) => x.operationId === operationId)) throw new Error(`route ${r.operationId} links to no operation ${operationId}`);
        return [operationId, { operationId, parameters }];
      }));
    }
    if (status !== 204 && !r.raw && !r.response) throw new Error(`route ${r.operationId} declares no answer schema`);
    (paths[r.path] ??= {})[r.method] = {
      operationId: r.operationId,
      tags: [r.tag],
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      security: r.auth === false ? [] : [{ bearer: [] }],
      parameters,
      ...(r.body ? { requestBody: { required: r.method === 'post' && !r.body.safeParse({}).success, content: { 'application/json': { schema: requestSchema(r.body) } } } } : {}),
      responses: {
        [String(status)]: success,
        ...Object.fromEntries([...errors].sort().map((c) => [String(c), { $ref: `#/components/responses/${ERROR_RESPONSES[c]!.name}` }])),
      },
    };
  }
  const responses = Object.fromEntries(Object.values(ERROR_RESPONSES).map(({ name, description, headers }) => [name, {
    description,
    ...(headers ? { headers } : {}),
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
  }]));
  return {
    openapi: '3.1.0',
    info: { title: 'essh', version, description: DESCRIPTION },
    tags: TAGS,
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'An API token (essh login; POST /users/{id}/tokens)' } },
      schemas,
      parameters: parametersComponents,
      responses,
    },
  };
}
