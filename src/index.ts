/** preserve-dscp as a library: the same operations as the command line. */
export { attach, unload, gc, setPolicy, status, findObject, type OpOptions, type OpResult } from './ops.js';
export type { AttachRequest, Action, TunnelOptions } from './plan.js';
export type { StatusReport, InterfaceStatus } from './status.js';
export { parsePolicy } from './policy.js';
export { PlanError } from './plan.js';
