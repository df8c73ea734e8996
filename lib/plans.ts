/** What each plan allows an account (CONTRACT §8); an account may carry an override of the session count. */
export const PLAN_LIMITS = {
  development: { sessions: 1, largestContainerMb: 2048, cpus: 1 },
  starter: { sessions: 1, largestContainerMb: 2048, cpus: 1 },
  growth: { sessions: 10, largestContainerMb: 8192, cpus: 2 },
  scale: { sessions: 50, largestContainerMb: 16384, cpus: 4 },
  enterprise: { sessions: 200, largestContainerMb: 65536, cpus: 8 },
} as const;
export type Plan = keyof typeof PLAN_LIMITS;
export const PLANS = Object.keys(PLAN_LIMITS) as Plan[];

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

/** Seven days, the default maximum session duration of a stack. */
export const DEFAULT_MAX_SESSION_DURATION_S = 604_800;
