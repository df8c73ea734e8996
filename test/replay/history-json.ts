// History <-> JSON in the format `temporal workflow show --output json` prints, for the replay fixtures.
//
// The SDK has this: historyToJSON / historyFromJSON in @temporalio/common/lib/proto-utils (also what
// Worker.runReplayHistory uses for a JSON history). They fail in this project's install with
// "TypeError: type must be a Type": dockerode pins protobufjs 7, which npm hoists to the top of
// node_modules, so @temporalio/proto, /common and /worker each get a copy of protobufjs 8 of their
// own, and common's protojson refuses the message types of proto's copy (an `instanceof` across two
// copies). Where that happens, the same conversion runs here with the protojson of the copy the
// types belong to; the SDK's functions are used whenever they work (e.g. once protobufjs 8 is hoisted).
import { createRequire } from 'node:module';
import * as sdk from '@temporalio/common/lib/proto-utils.js';
import type { temporal } from '@temporalio/proto';

export type History = temporal.api.history.v1.IHistory;

const require = createRequire(import.meta.url);

interface Converter {
  toJSON(history: History): string;
  fromJSON(json: unknown): History;
}

const viaSdk: Converter = { toJSON: sdk.historyToJSON, fromJSON: sdk.historyFromJSON };

let chosen: Converter | undefined;

/** The SDK's converter if it works in this install, else the same conversion on proto's own protobufjs. */
function converter(): Converter {
  if (chosen) return chosen;
  try {
    viaSdk.fromJSON({ events: [] });
    chosen = viaSdk;
  } catch (err) {
    if (!(err instanceof TypeError && err.message === 'type must be a Type')) throw err;
    chosen = viaProtoCopy();
  }
  return chosen;
}

function viaProtoCopy(): Converter {
  const protoPath = require.resolve('@temporalio/proto');
  const fromProto = createRequire(protoPath);
  const proto = fromProto('@temporalio/proto');
  const protojson = fromProto('protobufjs/ext/protojson');
  const { patchProtobufRoot } = fromProto('@temporalio/proto/lib/patch-protobuf-root');
  const historyType = patchProtobufRoot(proto).lookupType('temporal.api.history.v1.History');
  const History = proto.temporal.api.history.v1.History;
  return {
    toJSON: (history) => JSON.stringify(protojson.toJson(historyType, History.fromObject(history)), null, 2),
    fromJSON: (json) => {
      const loaded = protojson.fromJson(historyType, fixEnums(json), { ignoreUnknownFields: true });
      if (loaded === null) throw new TypeError('Invalid history');
      return loaded as History;
    },
  };
}

/**
 * As the SDK's historyFromJSON does: older tools (tctl, older CLIs) print enum values in PascalCase
 * (`WorkflowExecutionStarted`) rather than proto's `EVENT_TYPE_WORKFLOW_EXECUTION_STARTED`.
 */
function fixEnums(history: unknown): unknown {
  if (typeof history !== 'object' || history === null || !Array.isArray((history as { events?: unknown }).events)) {
    throw new TypeError('Invalid history, expected an object with an array of events');
  }
  const constantCase = (s: string) => s.replace(/[^\b][A-Z]/g, (m) => `${m[0]}_${m[1]}`).toUpperCase();
  const fix = (obj: Record<string, any>, attr: string, prefix: string) =>
    typeof obj[attr] === 'string' && !obj[attr].startsWith(prefix) ? { [attr]: `${prefix}_${constantCase(obj[attr])}` } : {};
  const events = (history as { events: Record<string, any>[] }).events.map((e) => {
    const type = Object.keys(e).find((k) => k.endsWith('EventAttributes'));
    if (!type) throw new TypeError(`Missing attributes in history event: ${JSON.stringify(e)}`);
    const a = e[type];
    return {
      ...e,
      ...fix(e, 'eventType', 'EVENT_TYPE'),
      [type]: {
        ...a,
        ...(a.taskQueue ? { taskQueue: { ...a.taskQueue, ...fix(a.taskQueue, 'kind', 'TASK_QUEUE_KIND') } } : {}),
        ...fix(a, 'parentClosePolicy', 'PARENT_CLOSE_POLICY'),
        ...fix(a, 'workflowIdReusePolicy', 'WORKFLOW_ID_REUSE_POLICY'),
        ...fix(a, 'initiator', 'CONTINUE_AS_NEW_INITIATOR'),
        ...fix(a, 'retryState', 'RETRY_STATE'),
        ...(a.childWorkflowExecutionFailureInfo
          ? { childWorkflowExecutionFailureInfo: { ...a.childWorkflowExecutionFailureInfo, ...fix(a.childWorkflowExecutionFailureInfo, 'retryState', 'RETRY_STATE') } }
          : {}),
      },
    };
  });
  return { events };
}

/** A proto History as JSON text, as `temporal workflow show --output json` prints it. */
export const historyToJSON = (history: History): string => converter().toJSON(history);
/** A history parsed from such JSON (ours, or the temporal CLI's). */
export const historyFromJSON = (json: unknown): History => converter().fromJSON(json);
/** Which converter this install uses (for logs). */
export const historyJsonVia = (): 'sdk' | 'proto-copy' => (converter() === viaSdk ? 'sdk' : 'proto-copy');
