import type { Plan } from '../shapes/enumerations.js';

/** What each plan allows an account (CONTRACT §8); an account may carry an override of the session count. */
const PLAN_LIMITS: Record<Plan, { sessions: number; largestContainerMb: number; cpus: number }> = {
  development: { sessions: 1, largestContainerMb: 2048, cpus: 1 },
  starter: { sessions: 1, largestContainerMb: 2048, cpus: 1 },
  growth: { sessions: 10, largestContainerMb: 8192, cpus: 2 },
  scale: { sessions: 50, largestContainerMb: 16384, cpus: 4 },
  enterprise: { sessions: 200, largestContainerMb: 65536, cpus: 8 },
};

/** An unknown plan (a row written by hand, say) gets the smallest one's limits. */
function limitsOf(plan: string) {
  return PLAN_LIMITS[plan as Plan] ?? PLAN_LIMITS.development;
}

export function planLimit(plan: string): number {
  return limitsOf(plan).sessions;
}

export function planLargestContainerMb(plan: string): number {
  return limitsOf(plan).largestContainerMb;
}

export function planCpus(plan: string): number {
  return limitsOf(plan).cpus;
}
