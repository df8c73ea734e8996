import type { Request } from 'express';
import type { z } from 'zod';
import type { Principal } from '../services/auth.js';
import type { ApiDeps } from './app.js';

export type Method = 'get' | 'post' | 'patch' | 'delete';
export interface Route<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType> {
  method: Method;
  path: string; // OpenAPI style: /apps/{app}/sessions
  summary: string;
  auth?: boolean;
  status?: number;
  /** Error statuses this route answers besides the ones every route may (400, 401, 403, 404, 409, 422, 429). */
  errors?: number[];
  params?: P;
  query?: Q;
  body?: B;
  response?: z.ZodType;
  handler: (ctx: { principal: Principal; params: z.infer<P>; query: z.infer<Q>; body: z.infer<B>; req: Request }) => Promise<unknown>;
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
