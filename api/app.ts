import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Db } from '../lib/db.js';
import { authenticate, type Principal } from '../services/auth.js';
import type { AdminService } from '../services/admin.js';
import { ApiError } from '../services/errors.js';
import type { SessionsService } from '../services/sessions.js';
import type { Metrics } from '../lib/metrics.js';
import * as s from './schemas.js';
import { RawResponse, type Route, type RouteAdder, type RouteModule } from './route.js';
import { registerAdminRoutes } from './routes/admin.js';
import { registerSessionRoutes } from './routes/sessions.js';

export interface ApiDeps {
  db: Db;
  sessions: SessionsService;
  admin: AdminService;
  metrics: Metrics;
  log: Logger;
  version: string;
  /** Route modules of other parts (drains, recordings, …), registered after the core ones. */
  extraRoutes?: RouteModule[];
}

/** Builds the REST API: thin handlers over the services, validated by the same schemas the OpenAPI document shows. */
export function createApi(deps: ApiDeps) {
  const routes: Route<any, any, any>[] = [];
  const route: RouteAdder = (r) => void routes.push(r as Route<any, any, any>);

  for (const register of [registerSessionRoutes, registerAdminRoutes, ...(deps.extraRoutes ?? [])]) register(route, deps);

  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(express.json({ limit: '64kb', strict: true, type: () => true }));

  app.get('/healthz', async (_req, res) => {
    res.json({ ok: true, version: deps.version });
  });
  app.get('/metrics', async (_req, res) => {
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  app.get('/openapi.json', (_req, res) => {
    res.json(openApiDocument(routes, deps.version));
  });

  for (const r of routes) {
    const expressPath = r.path.replace(/\{(\w+)\}/g, ':$1');
    app[r.method](expressPath, async (req: Request, res: Response, next: NextFunction) => {
      try {
        const principal = r.auth === false ? (undefined as unknown as Principal) : await authenticate(deps.db, bearer(req));
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
    });
  }

  app.use((req: Request, res: Response) => {
    res.status(404).json({ error: 'not_found', message: `No route ${req.method} ${req.path}; see GET /openapi.json for the API.` });
  });
  // express recognises an error handler by its four parameters.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = toApiError(err);
    if (e.status >= 500) deps.log.error({ err, method: req.method, path: req.path }, 'request failed');
    if (e.code === 'plan_limit' || e.code === 'rate_limited') {
      const retry = (e.details?.retry_after_s as number | undefined) ?? undefined;
      if (retry) res.setHeader('Retry-After', String(retry));
    }
    res.status(e.status).json({ error: e.code, message: e.message, ...(e.details ?? {}) });
  });

  return { app, routes };
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
  if (e?.type === 'entity.too.large') return new ApiError(413 as number, 'invalid_request', 'The request body is larger than 64 KB; send less.');
  if (e?.status && e.status >= 400 && e.status < 500) return new ApiError(e.status, 'invalid_request', `The request could not be read: ${e.message}.`);
  return new ApiError(500, 'internal', 'Something went wrong on our side; the error has been logged. Try again, or report it.');
}

function openApiDocument(routes: Route<any, any, any>[], version: string) {
  const jsonSchema = (t: z.ZodType) => {
    const { $schema: _drop, ...rest } = z.toJSONSchema(t, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
    return rest;
  };
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const parameters: unknown[] = [];
    for (const [where, schema] of [['path', r.params], ['query', r.query]] as const) {
      if (!schema) continue;
      const js = jsonSchema(schema) as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, sch] of Object.entries(js.properties ?? {})) {
        parameters.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema: sch });
      }
    }
    const status = String(r.status ?? 200);
    const errors = Object.fromEntries(
      ['400', '401', '403', '404', '409', '422', '429', ...(r.errors ?? []).map(String)].map((c) => [c, { description: 'Error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } }]),
    );
    (paths[r.path] ??= {})[r.method] = {
      summary: r.summary,
      security: r.auth === false ? [] : [{ bearer: [] }],
      parameters,
      ...(r.body ? { requestBody: { required: r.method === 'post' && !r.body.safeParse({}).success, content: { 'application/json': { schema: jsonSchema(r.body) } } } } : {}),
      responses: {
        [status]: status === '204'
          ? { description: 'Done' }
          : { description: 'Success', content: { 'application/json': { schema: r.response ? jsonSchema(r.response) : {} } } },
        ...errors,
      },
    };
  }
  paths['/healthz'] = { get: { summary: 'Liveness', security: [], responses: { '200': { description: 'OK' } } } };
  return {
    openapi: '3.1.0',
    info: { title: 'essh', version, description: 'Ephemeral shell sessions on durable Temporal workflows' },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: { Error: jsonSchema(s.errorSchema) },
    },
    paths,
  };
}

