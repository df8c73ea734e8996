/**
 * When the kernel's OOM killer last acted in each container of this host (the engine's `oom` events,
 * followed by the host agent). With exec sessions the program, not the container, is what gets killed,
 * and the engine's `State.OOMKilled` stays false: the portal asks here when a program ends with 137.
 */
const lastOom = new Map<string, number>();

export function noteOom(containerId: string): void {
  lastOom.set(containerId, Date.now());
  setTimeout(() => lastOom.delete(containerId), 10 * 60_000).unref();
}

/** Whether an OOM kill happened in the container since `sinceMs` (epoch ms). */
export function oomSince(containerId: string, sinceMs: number): boolean {
  return (lastOom.get(containerId) ?? 0) >= sinceMs;
}
