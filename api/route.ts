import type { Request, RequestHandler } from 'express';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Db } from '../lib/db.js';
import type { Metrics } from '../lib/metrics.js';
import type { Exposition } from '../lib/metrics-server.js';
import type { AdminService } from '../services/admin.js';
import type { Principal } from '../services/auth.js';
import type { SessionsService } from '../services/sessions.js';

export type Method = 'get' | 'post' | 'patch' | 'delete';

/** An answer that is not JSON (a recording, the metrics): its media type and what /openapi.json says of it. */
export interface RawContent {
  contentType: string;
  description: string;
  /** The JSON Schema of the body as the OpenAPI media type shows it; a string by default. */
  schema?: Record<string, unknown>;
}

export interface Route<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType> {
  method: Method;
  path: string; // OpenAPI style: /apps/{app}/sessions
  /** Unique over the API: what generated clients name the call. */
  operationId: string;
  /** The OpenAPI tag that groups it (sessions, apps, …). */
  tag: string;
  summary: string;
  description?: string;
  auth?: boolean;
  status?: number;
  /**
   * Error statuses this route answers besides the ones every route may: 400 (a bad path, query or JSON
   * body), 401 (when it needs a token), 500, and, with a body, 413 and 422; with path parameters, 404.
   */
  errors?: number[];
  params?: P;
  query?: Q;
  body?: B;
  /** The JSON answer's schema (a component of api/schemas.ts, or one of its own); none for a 204. */
  response?: z.ZodType;
  /** Instead of `response`: an answer that is not JSON, which the handler gives as a RawResponse. */
  raw?: RawContent;
  /**
   * OpenAPI links of the success answer: the operations its values feed, by operationId, with runtime
   * expressions for their parameters (e.g. `{ getApp: { app: '$response.body#/handle' } }`).
   */
  links?: Record<string, Record<string, string>>;
  handler: (ctx: { principal: Principal; params: z.output<P>; query: z.output<Q>; body: z.output<B>; req: Request }) => Promise<unknown>;
}


export type RouteAdder = <P extends z.ZodType = z.ZodObject<{}>, Q extends z.ZodType = z.ZodObject<{}>, B extends z.ZodType = z.ZodUndefined>(
  r: Route<P, Q, B>,
) => void;

/** What the API is made of: the services its routes call, and the parts that add routes and pages. */
export interface ApiDeps {
  db: Db;
  sessions: SessionsService;
  admin: AdminService;
  metrics: Metrics;
  /** What GET /metrics answers: the process's registry, with the Temporal SDK's figures where a worker runs. */
  exposition?: Exposition;
  /**
   * The bearer token that opens GET /metrics here (ESSH_METRICS_TOKEN). Without one, the API's port
   * (public) serves no metrics: Prometheus scrapes the process's metrics listener instead.
   */
  metricsToken?: string;
  /** ESSH_TRUST_PROXY: the proxies (addresses, CIDR ranges) whose X-Forwarded-For names the client; none by default. */
  trustProxy?: string[];
  log: Logger;
  version: string;
  /** Route modules of other parts (drains, recordings, …), registered after the core ones. */
  extraRoutes?: RouteModule[];
  /**
   * Pages served as they are, outside the JSON API (the web console): mounted at `path`, answering
   * GET and HEAD only. Not in /openapi.json.
   */
  pages?: { path: string; handler: RequestHandler }[];
}

/** A part's routes: called once with the adder and the API's dependencies. */
export type RouteModule = (route: RouteAdder, deps: ApiDeps) => void;

/** A handler's answer that is not JSON (a recording, say): sent as is with its content type. */
export class RawResponse {
  constructor(
    readonly contentType: string,
    readonly body: string | Buffer | NodeJS.ReadableStream,
  ) {}
}
