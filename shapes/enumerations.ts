// The enumerations and fixed names that requests, answers, workflows and clients share. Imports
// nothing (not even zod), so that workflow code, the CLI's start-up and the browser console can take
// them at no cost; deterministic, so safe in workflow code.

export const SESSION_STATES = ['provisioning', 'waiting_for_client', 'active', 'ending', 'ended'] as const;
export type SessionState = (typeof SESSION_STATES)[number];

export const END_REASONS = [
  'exit',
  'disconnect',
  'terminated',
  'expired',
  'connect_timeout',
  'provision_failed',
  'container_lost',
  // Not in the contract (docs/contract-departures.md): an interactive session's idle timeout.
  'idle',
] as const;
export type EndReason = (typeof END_REASONS)[number];

export const OPERATION_STATUSES = ['queued', 'running', 'succeeded', 'failed'] as const;
export type OperationStatus = (typeof OPERATION_STATUSES)[number];

export const ROLES = ['member', 'account_admin', 'operator'] as const;
export type Role = (typeof ROLES)[number];

/** The plans of CONTRACT §8; what each allows is domain/plans.ts. */
export const PLANS = ['development', 'starter', 'growth', 'scale', 'enterprise'] as const;
export type Plan = (typeof PLANS)[number];

export const DRAIN_TYPES = ['https', 'syslog', 'elasticsearch'] as const;
export type DrainType = (typeof DRAIN_TYPES)[number];
/** `paused` after the receiver refused our credentials or target (401/403/404). */
export const DRAIN_STATUSES = ['active', 'paused'] as const;
export type DrainStatus = (typeof DRAIN_STATUSES)[number];

/** Ready-made redaction rules an account admin can switch on by name; their patterns are redaction/redaction.ts. */
export const REDACTION_PRESET_NAMES = ['card_number', 'us_ssn'] as const;
export type RedactionPreset = (typeof REDACTION_PRESET_NAMES)[number];
/** `over_budget` once the rule took longer than its time budget on some output. */
export const REDACTION_RULE_STATUSES = ['active', 'over_budget'] as const;

export const AUDIT_TARGET_TYPES = ['account', 'stack', 'app', 'user', 'api_token', 'ssh_key', 'log_drain', 'redaction_rule', 'host'] as const;
export type AuditTargetType = (typeof AUDIT_TARGET_TYPES)[number];
export const AUDIT_ACTIONS = [
  'account.created', 'account.updated', 'stack.created', 'app.created', 'app.updated', 'user.created',
  'api_token.created', 'api_token.revoked', 'ssh_key.added', 'ssh_key.removed',
  'log_drain.created', 'log_drain.resumed', 'log_drain.deleted', 'redaction_rule.created', 'redaction_rule.deleted',
  'host.cordoned', 'host.uncordoned',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/** The SSHSIG namespace (ssh-keygen's -n) of key registration signatures: a signature for git, e-mail or files is no proof here. */
export const SSH_KEY_NAMESPACE = 'essh-key-registration';

/** Seven days, the default maximum session duration of a stack, and the most a stack may set. */
export const DEFAULT_MAX_SESSION_DURATION_S = 604_800;

/**
 * The longest idle timeout a stack or an account may set (`idle_timeout_s`): a session lasts no longer
 * than the maximum session duration anyway.
 */
export const MAX_IDLE_TIMEOUT_S = DEFAULT_MAX_SESSION_DURATION_S;

/** The longest redaction pattern (how many rules an account may have is in domain/caps.ts): each one costs every output event a pass. */
export const MAX_PATTERN_LENGTH = 1000;

/** The longest terminate reason the API takes (POST /sessions/{id}/terminate), and the console's form. */
export const TERMINATE_REASON_MAX_CHARS = 500;

/**
 * A host's id (ESSH_HOST_ID, by default the machine's hostname): what names it in GET /hosts, its task
 * queue `essh-host-<stack>-<id>` and its containers' labels, so letters, digits, `.`, `_` and `-` only.
 */
export const HOST_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
