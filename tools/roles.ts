/** Roles that may call a tool: the user-facing agent, the rider-facing agent, or a human operator. */
export const callerRoles = ['user_agent', 'rider_agent', 'operator'] as const;
export type CallerRole = (typeof callerRoles)[number];
