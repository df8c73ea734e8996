import type { Request } from 'express';
import type { z } from 'zod';
import type { Principal } from '../services/auth.js';
import type { ApiDeps } from './app.js';

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

/** A part's routes: called once with the adder and the API's dependencies. */
export type RouteModule = (route: RouteAdder, deps: ApiDeps) => void;

/** A handler's answer that is not JSON (a recording, say): sent as is with its content type. */
export class RawResponse {
  constructor(
    readonly contentType: string,
    readonly body: string | Buffer | NodeJS.ReadableStream,
  ) {}
}
