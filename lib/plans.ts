/** Concurrent sessions per account, by plan (CONTRACT §8); an account may carry an override. */
export const PLAN_LIMITS = {
  development: 1,
  starter: 1,
  growth: 10,
  scale: 50,
  enterprise: 200,
} as const;
export type Plan = keyof typeof PLAN_LIMITS;
export const PLANS = Object.keys(PLAN_LIMITS) as Plan[];

export function planLimit(plan: string): number {
  return PLAN_LIMITS[plan as Plan] ?? 1;
}

/** Seven days, the default maximum session duration of a stack. */
export const DEFAULT_MAX_SESSION_DURATION_S = 604_800;
