import { createHash } from 'node:crypto';

/** A key's fingerprint as `ssh-keygen -l -E sha256` prints it: `SHA256:` and unpadded base64 of its SSH wire blob. */
export function sshFingerprint(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}
