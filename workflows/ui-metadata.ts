// What the Temporal UI shows of a session: the workflow's summary and details (set by the API at start)
// and its current details (set by the workflow as the session moves on). Temporal markdown; ids,
// handles, states and reasons only: no e-mail, name or other personal data, no command line (it may
// carry a secret), no text a user typed (a terminate reason). Deterministic: safe in workflow code.
import type { SessionWorkflowInput } from '../shapes/session-workflow.js';
import type { EndReason, SessionState } from '../shapes/enumerations.js';

type Identity = Pick<SessionWorkflowInput, 'operationId' | 'app' | 'account' | 'stack'>;

/** The one-line summary of the workflow (the UI's title line and the workflow list). */
export function sessionSummary(input: Identity): string {
  return `essh session ${input.operationId} · app ${input.app.handle} · account ${input.account.handle} · stack ${input.stack}`;
}

/** The workflow's fixed details. */
export function sessionStaticDetails(input: SessionWorkflowInput): string {
  return [
    `**Session** ${input.operationId} (operation ${input.operationId})`,
    `**App** ${input.app.handle} (id ${input.app.id}) · **Account** ${input.account.handle} (id ${input.account.id}) · **Stack** ${input.stack}`,
    `**User id** ${input.user.id}`,
    `**Program** ${input.command ? 'a command' : "the app's shell"}${input.detach ? ', detached' : input.tty === false ? ', without a TTY' : ''} · **Container** ${input.containerSizeMb} MB${input.cpus ? `, ${input.cpus} CPU` : ''}`,
    `**Created** ${input.createdAt} · **Expires** ${input.expiresAt}`,
  ].join('\n');
}

/** Reasons whose end message essh wrote itself (the others may carry what someone typed). */
const SYSTEM_MESSAGES: ReadonlySet<EndReason> = new Set(['exit', 'provision_failed', 'container_lost', 'connect_timeout', 'disconnect', 'expired', 'idle']);

/** The workflow's current details: its state now, and how it ended. */
export function sessionCurrentDetails(
  input: Identity,
  now: {
    state: SessionState;
    containerId: string | null;
    clients: number;
    runs: number;
    end: { reason: EndReason; exitCode: number | null; message: string | null } | null;
  },
): string {
  const lines = [
    `**${sessionSummary(input)}**`,
    `**State** ${now.state}${now.containerId ? ` · **Container** ${now.containerId.slice(0, 12)}` : ''} · **Clients attached** ${now.clients}` +
      (now.runs > 1 ? ` · **Run** ${now.runs} (continued as new)` : ''),
  ];
  if (now.end) {
    const message = now.end.message && SYSTEM_MESSAGES.has(now.end.reason) ? `: ${now.end.message.replace(/\s+/g, ' ').slice(0, 300)}` : '';
    lines.push(`**End reason** ${now.end.reason}${now.end.exitCode !== null ? ` · **Exit code** ${now.end.exitCode}` : ''}${message}`);
  }
  return lines.join('\n');
}
