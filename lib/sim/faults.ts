/**
 * Fault injection for the simulated target: each fault fires for the next N matching commands,
 * or with a probability drawn from a seeded PRNG (reproducible), or both (at most N times).
 */
import { createPrng, type Prng } from './prng.js';

export const FAULT_KINDS = [
  'latency',
  'busy',
  'unit-attention',
  'not-ready',
  'task-set-full',
  'drop-connection',
  'gls-bad-length',
  'gls-overlap',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Which commands a fault applies to. */
export const FAULT_TARGETS = ['get-lba-status', 'read', 'any'] as const;
export type FaultTarget = (typeof FAULT_TARGETS)[number];

export interface FaultSpec {
  kind: FaultKind;
  /** Fire for the next `count` matching commands (default 1 when no probability is given). */
  count?: number;
  /** Fire with this probability per matching command (0..1). */
  probability?: number;
  /** PRNG seed for `probability` (default 0). */
  seed?: number;
  /** Added delay for 'latency', in milliseconds (default 100). */
  ms?: number;
  /** Commands it applies to (default 'get-lba-status'; gls-* kinds always GET LBA STATUS). */
  on?: FaultTarget;
}

/** What to do with one command. */
export interface FaultDecision {
  latencyMs: number;
  /** The first non-latency fault that fired, if any. */
  action?: Exclude<FaultKind, 'latency'>;
}

interface ActiveFault {
  spec: FaultSpec;
  remaining: number;
  prng: Prng | undefined;
}

/** Classifies a CDB for fault matching. */
export function commandClass(cdb: Buffer): 'get-lba-status' | 'read' | 'other' {
  const op = cdb[0];
  if (op === 0x7f && cdb.length >= 10 && cdb.readUInt16BE(8) === 0x0012) return 'get-lba-status';
  if (op === 0x9e && ((cdb[1] ?? 0) & 0x1f) === 0x12) return 'get-lba-status';
  if (op === 0x08 || op === 0x28 || op === 0xa8 || op === 0x88) return 'read';
  return 'other';
}

/** Validates a fault spec (throws RangeError/TypeError with what to fix). */
export function validateFault(spec: FaultSpec): FaultSpec {
  if (!spec || typeof spec !== 'object') throw new TypeError('a fault must be an object');
  if (!FAULT_KINDS.includes(spec.kind)) {
    throw new RangeError(
      `fault kind must be one of ${FAULT_KINDS.join(', ')}; got ${String(spec.kind)}`,
    );
  }
  if (spec.count !== undefined && (!Number.isSafeInteger(spec.count) || spec.count < 0)) {
    throw new RangeError(`fault count must be a non-negative integer; got ${spec.count}`);
  }
  if (
    spec.probability !== undefined &&
    !(typeof spec.probability === 'number' && spec.probability >= 0 && spec.probability <= 1)
  ) {
    throw new RangeError(`fault probability must be in [0, 1]; got ${spec.probability}`);
  }
  if (spec.seed !== undefined && !Number.isSafeInteger(spec.seed)) {
    throw new RangeError(`fault seed must be an integer; got ${spec.seed}`);
  }
  if (spec.ms !== undefined && !(Number.isFinite(spec.ms) && spec.ms >= 0)) {
    throw new RangeError(`fault ms must be a non-negative number; got ${spec.ms}`);
  }
  if (spec.on !== undefined && !FAULT_TARGETS.includes(spec.on)) {
    throw new RangeError(`fault "on" must be one of ${FAULT_TARGETS.join(', ')}; got ${spec.on}`);
  }
  return spec;
}

/** The set of active faults of one simulator. */
export class FaultInjector {
  #faults: ActiveFault[] = [];
  /** How many times each kind fired. */
  readonly fired = new Map<FaultKind, number>();

  constructor(specs: readonly FaultSpec[] = []) {
    for (const s of specs) this.add(s);
  }

  /** Adds a fault; it applies from the next command on. */
  add(spec: FaultSpec): void {
    validateFault(spec);
    const remaining = spec.count ?? (spec.probability === undefined ? 1 : Number.POSITIVE_INFINITY);
    const prng = spec.probability === undefined ? undefined : createPrng(spec.seed ?? 0);
    this.#faults.push({ spec: { ...spec }, remaining, prng });
  }

  /** Removes every fault. */
  clear(): void {
    this.#faults = [];
  }

  /** Faults still able to fire. */
  get active(): FaultSpec[] {
    return this.#faults.filter((f) => f.remaining > 0).map((f) => ({ ...f.spec }));
  }

  /** Decides the faults for one command (consumes counts and PRNG draws). */
  decide(cdb: Buffer): FaultDecision {
    const cls = commandClass(cdb);
    const out: FaultDecision = { latencyMs: 0 };
    for (const f of this.#faults) {
      if (f.remaining <= 0) continue;
      const kind = f.spec.kind;
      const on = kind.startsWith('gls-') ? 'get-lba-status' : (f.spec.on ?? 'get-lba-status');
      if (on !== 'any' && on !== cls) continue;
      if (kind !== 'latency' && out.action !== undefined) continue;
      if (f.prng && f.prng.float() >= f.spec.probability!) continue;
      f.remaining--;
      this.fired.set(kind, (this.fired.get(kind) ?? 0) + 1);
      if (kind === 'latency') out.latencyMs += f.spec.ms ?? 100;
      else out.action = kind;
    }
    this.#faults = this.#faults.filter((f) => f.remaining > 0);
    return out;
  }
}

/**
 * Parses the CLI form `KIND[:key=value,...]`, e.g. `busy:count=3`,
 * `latency:ms=200,p=0.5,seed=7,on=any`, `gls-overlap`.
 */
export function parseFault(text: string): FaultSpec {
  const [kind, rest] = text.split(':', 2) as [string, string | undefined];
  const spec: FaultSpec = { kind: kind as FaultKind };
  for (const item of rest ? rest.split(',') : []) {
    const [k, v] = item.split('=', 2) as [string, string | undefined];
    if (v === undefined || v === '')
      throw new RangeError(`fault option "${item}" needs a value (key=value)`);
    const num = Number(v);
    switch (k) {
      case 'count':
      case 'n':
        spec.count = num;
        break;
      case 'p':
      case 'probability':
        spec.probability = num;
        break;
      case 'seed':
        spec.seed = num;
        break;
      case 'ms':
        spec.ms = num;
        break;
      case 'on':
        spec.on = v as FaultTarget;
        break;
      default:
        throw new RangeError(`unknown fault option "${k}" (use count, p, seed, ms, on)`);
    }
  }
  return validateFault(spec);
}
