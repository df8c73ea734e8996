import type Docker from 'dockerode';
import { dockerStatus } from '../lib/docker.js';
import { legacyContainerName, sessionContainerName } from '../host/containers.js';

/**
 * Activities that only workflows started before exec sessions still call when they end (the branch of
 * `finish` without the `exec-sessions` patch). Their output went through the engine's log, which no
 * longer exists in essh: these stop the container and report done. Remove them, with that branch
 * (`deprecatePatch`), once no such session can be live: 7 days after every host runs exec sessions
 * (docs/workflow-versioning.md).
 */
export function createLegacyHostActivities(deps: { docker: Docker; installation: string }) {
  return {
    async stopAndFinishCapture(req: { operationId: number; stopGraceS: number; timeoutMs: number }): Promise<{ complete: boolean }> {
      for (const name of [sessionContainerName(deps.installation, req.operationId), legacyContainerName(req.operationId)]) {
        try {
          await deps.docker.getContainer(name).stop({ t: req.stopGraceS });
        } catch (err) {
          const status = dockerStatus(err);
          if (status !== 304 && status !== 404 && status !== 409) throw err;
        }
      }
      return { complete: true };
    },
  };
}

export function createLegacyMainActivities() {
  return {
    /** The old session_ended event went to a table that is gone; the Operation record keeps the end. */
    async recordSessionEnded(_e: {
      operationId: number; endReason: string; endMessage: string | null; endedBy: string | null; exitCode: number | null; endedAt: string;
    }): Promise<void> {},
  };
}

export type LegacyHostActivities = ReturnType<typeof createLegacyHostActivities>;
export type LegacyMainActivities = ReturnType<typeof createLegacyMainActivities>;
