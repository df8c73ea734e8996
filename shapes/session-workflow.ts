// The Temporal names and shapes shared by the workflow, its activities and the programs that signal or
// query it (API, portal, host agent). Deterministic: safe to import from workflow code.
import { defineQuery, defineSignal } from '@temporalio/workflow';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import type { EndReason, OperationStatus, SessionState } from './enumerations.js';
// Types only: the Session's schema (zod) stays out of the workflow bundle.
import type { Session } from './answers.js';

export const TASK_QUEUE = 'essh';
/**
 * The stack's shared host queue: every host of the stack polls it, for the sessions started before
 * placement (their input names no host), which must still find a worker (docs/fleet.md).
 */
export const hostTaskQueue = (stack: string) => `essh-host-${stack}`;
/** One host's own queue for a stack: everything of a session placed on that host runs there. */
export const hostOwnTaskQueue = (stack: string, hostId: string) => `essh-host-${stack}-${hostId}`;
export const sessionWorkflowId = (operationId: number | string) => `ssh-session-${operationId}`;

const FAILED_REASONS: ReadonlySet<EndReason> = new Set(['provision_failed', 'connect_timeout', 'container_lost']);
export function operationStatusFor(state: SessionState, endReason: EndReason | null): OperationStatus {
  if (state !== 'ended') return 'running';
  return endReason && FAILED_REASONS.has(endReason) ? 'failed' : 'succeeded';
}

export interface HeartbeatSignal {
  connection_id: string;
}
export interface ClientDisconnectedSignal {
  connection_id: string;
  reason?: string;
}
export interface TerminateSignal {
  reason?: string;
  by?: string;
}
/** Sent by the host agent that watches the Docker engine (not part of the public contract). */
export interface ContainerExitedSignal {
  container_id: string;
  exit_code: number | null;
  lost: boolean;
  oom_killed?: boolean;
  message?: string;
}

/**
 * Sent by the portal when the session's program (its `docker exec`) has exited: the session ends
 * with `exit` and that exit code (not part of the public contract).
 */
export interface ProgramExitedSignal {
  connection_id: string;
  exit_code: number | null;
  /** The kernel's OOM killer ended it: the session's end message says so. */
  oom_killed?: boolean;
}

/**
 * Sent by the host-loss sweep of the `worker` role (worker/host-loss-sweep.ts) when the session's host has
 * not reported for longer than its stale time: the session ends `container_lost`, and nothing more is
 * asked of that host (not part of the public contract). Sent again every sweep until the session ends.
 */
export interface HostLostSignal {
  hostId: string;
  /** When the host last reported (its `hosts.seen_at`). */
  lastSeenAt: string;
}

/**
 * Sent by the portal a client is attached through when neither the client typed nor the program printed
 * anything for the session's idle timeout (portal/idle-timeout.ts): the session ends `idle` with
 * `message` (not part of the public contract). Only from the connection the workflow knows as attached.
 */
export interface IdleTimeoutSignal {
  connection_id: string;
  /** Says how long and whose timeout: "no input or output for 300 s (the idle timeout of account acme)". */
  message: string;
}

export const heartbeatSignal = defineSignal<[HeartbeatSignal]>('heartbeat');
export const programExitedSignal = defineSignal<[ProgramExitedSignal]>('programExited');
export const clientDisconnectedSignal = defineSignal<[ClientDisconnectedSignal]>('clientDisconnected');
export const terminateSignal = defineSignal<[TerminateSignal]>('terminate');
export const containerExitedSignal = defineSignal<[ContainerExitedSignal]>('containerExited');
export const hostLostSignal = defineSignal<[HostLostSignal]>('hostLost');
export const idleTimeoutSignal = defineSignal<[IdleTimeoutSignal]>('idleTimeout');

/** The `describe` query: the Session as the workflow knows it, with its attached connections. */
export interface SessionSnapshot extends Session {
  connections: string[];
}
export const describeQuery = defineQuery<SessionSnapshot>('describe');

export const SA = {
  app: defineSearchAttributeKey('EsshApp', SearchAttributeType.KEYWORD),
  account: defineSearchAttributeKey('EsshAccount', SearchAttributeType.KEYWORD),
  userId: defineSearchAttributeKey('EsshUserId', SearchAttributeType.KEYWORD),
  operationId: defineSearchAttributeKey('EsshOperationId', SearchAttributeType.INT),
  state: defineSearchAttributeKey('EsshState', SearchAttributeType.KEYWORD),
  endReason: defineSearchAttributeKey('EsshEndReason', SearchAttributeType.KEYWORD),
};
export const SEARCH_ATTRIBUTE_KEYS = Object.values(SA);

export interface SessionWorkflowInput {
  operationId: number;
  app: { id: number; handle: string };
  account: { id: number; handle: string };
  user: { id: number; name: string; email: string };
  stack: string;
  command: string[] | null;
  containerSizeMb: number;
  /** CPUs the container may use (its plan's; absent in sessions started before plans had CPU limits). */
  cpus?: number;
  /** Label that marks this installation's containers, so a shared engine's other containers are left alone. */
  instanceId: string;
  createdAt: string;
  expiresAt: string;
  heartbeatTimeoutS: number;
  connectTimeoutS: number;
  stopGraceS: number;
  pidsLimit: number;
  /** false: plain stdin/stdout/stderr (an SSH exec without a PTY); absent or true: a TTY. */
  tty?: boolean;
  /** The portal starts the container once it has attached, so no output is produced before a client sees it. */
  startOnAttach?: boolean;
  /**
   * A detached job: the host runs the command at once with no client, and the session ends when it exits
   * (or by terminate or expiry), never for want of heartbeats. Absent in every session before detached jobs.
   */
  detach?: boolean;
  /**
   * The host the API placed the session on: its activities go to that host's own queue. Absent in
   * sessions started before placement, and when the stack had no live host to place it on: the
   * stack's shared queue then.
   */
  hostId?: string;
  /** Present on a continued-as-new run: the state its predecessor reached. */
  carried?: CarriedState;
}

export interface CarriedState {
  state: SessionState;
  containerId: string | null;
  readyAt: string | null;
  connectedAt: string | null;
  /** connection id → last heartbeat (epoch ms). */
  connections: Record<string, number>;
  runs: number;
  /**
   * When the workflow last saw its heartbeat deadline only after it had passed (a Temporal outage): the
   * heartbeat timeout counts from here too (epoch ms). Absent in runs that never did, and in state carried
   * by runs of code before `heartbeat-grace-after-outage`.
   */
  heartbeatGraceFrom?: number;
  /**
   * How long that grace lasts from `heartbeatGraceFrom` (ms): a heartbeat timeout plus how late the
   * deadline was seen. Absent: one heartbeat timeout (runs before `heartbeat-grace-scales-with-outage`).
   */
  heartbeatGraceMs?: number;
}

export interface SessionResult {
  end_reason: EndReason;
  exit_code: number | null;
  end_message: string | null;
  ended_by: string | null;
  runs: number;
}

/** Activity inputs/outputs, shared by the workflow and the activity implementations. */
export interface ContainerSpecRequest {
  operationId: number;
  appId: number;
  command: string[] | null;
  containerSizeMb: number;
  cpus?: number;
  account: string;
  app: string;
  stack: string;
  instanceId: string;
  pidsLimit: number;
  tty?: boolean;
  startOnAttach?: boolean;
  /** A detached job: its journal's `session_started` says so. */
  detach?: boolean;
}

/** The program of a detached job (see activities/host.ts runDetachedProgram). */
export interface DetachedProgramRequest {
  operationId: number;
  containerId: string;
}

/** How a detached job's program ended. */
export interface DetachedProgramExit {
  exit_code: number | null;
  oom_killed: boolean;
}

/** The teardown of an exec session (see activities/host.ts endSession). */
export interface EndSessionRequest {
  operationId: number;
  /** The container the session got (absent if provisioning never finished: then found by its name). */
  containerId: string | null;
  stopGraceS: number;
  createdAt: string;
  endReason: EndReason;
  endMessage: string | null;
  endedBy: string | null;
  exitCode: number | null;
  /** A detached job: its journal's `session_ended` says so. */
  detach?: boolean;
}

export interface SessionRecordUpdate {
  operationId: number;
  state: SessionState;
  containerId?: string | null;
  connectedAt?: string | null;
  endedAt?: string | null;
  endReason?: EndReason | null;
  endMessage?: string | null;
  endedBy?: string | null;
  exitCode?: number | null;
}
