/**
 * Target-side login negotiation (RFC 7143 §6, §7, §13): security stage (AuthMethod None or
 * CHAP with MD5), operational parameters, and the final transition to full feature phase.
 *
 * Pure: it consumes decoded Login Requests and returns what to put in each Login Response; the
 * connection code owns sockets, StatSN and TSIH.
 */
import { createHash, randomBytes } from 'node:crypto';
import { type LoginRequestPdu, Stage } from './pdu.js';
import { decodeText } from './text.js';

/** Login status classes and details (RFC 7143 §11.13.5). */
export const LoginStatus = {
  Success: [0, 0],
  InitiatorError: [2, 0],
  AuthenticationFailure: [2, 1],
  AuthorizationFailure: [2, 2],
  NotFound: [2, 3],
  TargetRemoved: [2, 4],
  UnsupportedVersion: [2, 5],
  TooManyConnections: [2, 6],
  MissingParameter: [2, 7],
  CantIncludeInSession: [2, 8],
  SessionTypeNotSupported: [2, 9],
  SessionDoesNotExist: [2, 0x0a],
  InvalidDuringLogin: [2, 0x0b],
  TargetError: [3, 0],
  ServiceUnavailable: [3, 1],
  OutOfResources: [3, 2],
} as const satisfies Record<string, readonly [number, number]>;

/** Operational parameters in effect after login (RFC 7143 §13). */
export interface SessionParams {
  /** What the *initiator* can receive: the target's Data-In segments must not exceed it. */
  initiatorMaxRecvDataSegmentLength: number;
  /** What the *target* declared it can receive. */
  targetMaxRecvDataSegmentLength: number;
  maxBurstLength: number;
  firstBurstLength: number;
  initialR2T: boolean;
  immediateData: boolean;
  defaultTime2Wait: number;
  defaultTime2Retain: number;
  maxOutstandingR2T: number;
  dataPDUInOrder: boolean;
  dataSequenceInOrder: boolean;
  errorRecoveryLevel: number;
  maxConnections: number;
  headerDigest: 'None';
  dataDigest: 'None';
}

/** RFC 7143 defaults, used for keys the initiator does not send. */
export const defaultSessionParams: SessionParams = {
  initiatorMaxRecvDataSegmentLength: 8192,
  targetMaxRecvDataSegmentLength: 8192,
  maxBurstLength: 262144,
  firstBurstLength: 65536,
  initialR2T: true,
  immediateData: true,
  defaultTime2Wait: 2,
  defaultTime2Retain: 20,
  maxOutstandingR2T: 1,
  dataPDUInOrder: true,
  dataSequenceInOrder: true,
  errorRecoveryLevel: 0,
  maxConnections: 1,
  headerDigest: 'None',
  dataDigest: 'None',
};

export interface ChapCredentials {
  username: string;
  secret: string;
}

export interface TargetLoginConfig {
  /** Resolves a TargetName to true when this portal serves it. */
  hasTarget(name: string): boolean;
  /** TargetPortalGroupTag sent in the first Login Response of a normal session. */
  portalGroupTag: number;
  /** When set, normal and discovery sessions must authenticate with CHAP (MD5). */
  chap?: ChapCredentials;
  /** Credentials the target answers with when the initiator asks for mutual CHAP. */
  mutualChap?: ChapCredentials;
  /** The target's offers for negotiated keys (defaults: large bursts, ERL 0, one connection). */
  offer?: Partial<SessionParams>;
  /** Random bytes for CHAP challenges (injectable for byte-exact tests). */
  random?: (n: number) => Buffer;
  /**
   * Most bytes of text in one key=value set, continued Login Requests (C bit) included
   * (default 65536); more fails the login with Initiator Error (2/00) before it is buffered.
   */
  maxTextBytes?: number;
}

/** What the connection must send back for one Login Request. */
export interface LoginStep {
  transit: boolean;
  csg: number;
  nsg: number;
  statusClass: number;
  statusDetail: number;
  keys: Array<[string, string]>;
  /** The login phase ended successfully: the connection is in full feature phase. */
  complete: boolean;
  /** The login failed: send the response, then close the connection. */
  failed: boolean;
}

const targetOffer: SessionParams = {
  initiatorMaxRecvDataSegmentLength: 8192,
  targetMaxRecvDataSegmentLength: 262144,
  maxBurstLength: 16776192,
  firstBurstLength: 262144,
  initialR2T: true,
  immediateData: true,
  defaultTime2Wait: 2,
  defaultTime2Retain: 0,
  maxOutstandingR2T: 1,
  dataPDUInOrder: true,
  dataSequenceInOrder: true,
  errorRecoveryLevel: 0,
  maxConnections: 1,
  headerDigest: 'None',
  dataDigest: 'None',
};

type NumericKey =
  | 'maxBurstLength'
  | 'firstBurstLength'
  | 'defaultTime2Wait'
  | 'defaultTime2Retain'
  | 'maxOutstandingR2T'
  | 'errorRecoveryLevel'
  | 'maxConnections';
type BoolKey = 'initialR2T' | 'immediateData' | 'dataPDUInOrder' | 'dataSequenceInOrder';

const numericKeys: Record<string, [NumericKey, 'min' | 'max', number, number]> = {
  MaxBurstLength: ['maxBurstLength', 'min', 512, 16777215],
  FirstBurstLength: ['firstBurstLength', 'min', 512, 16777215],
  DefaultTime2Wait: ['defaultTime2Wait', 'max', 0, 3600],
  DefaultTime2Retain: ['defaultTime2Retain', 'min', 0, 3600],
  MaxOutstandingR2T: ['maxOutstandingR2T', 'min', 1, 65535],
  ErrorRecoveryLevel: ['errorRecoveryLevel', 'min', 0, 2],
  MaxConnections: ['maxConnections', 'min', 1, 65535],
};
const boolKeys: Record<string, [BoolKey, 'or' | 'and']> = {
  InitialR2T: ['initialR2T', 'or'],
  ImmediateData: ['immediateData', 'and'],
  DataPDUInOrder: ['dataPDUInOrder', 'or'],
  DataSequenceInOrder: ['dataSequenceInOrder', 'or'],
};
const declarative = new Set([
  'InitiatorName',
  'InitiatorAlias',
  'TargetName',
  'SessionType',
  'MaxRecvDataSegmentLength',
]);

function yesNo(v: boolean): string {
  return v ? 'Yes' : 'No';
}

/** Parses a CHAP binary value: 0x… hex or 0b… base64 (RFC 7143 §6.1). */
export function parseChapBinary(v: string): Buffer | undefined {
  if (/^0[xX][0-9a-fA-F]+$/.test(v)) {
    const hex = v.slice(2);
    return Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  }
  if (/^0[bB][A-Za-z0-9+/=]+$/.test(v)) return Buffer.from(v.slice(2), 'base64');
  return undefined;
}

/** CHAP MD5 response: MD5(id || secret || challenge) (RFC 1994). */
export function chapResponse(id: number, secret: string, challenge: Buffer): Buffer {
  return createHash('md5')
    .update(Buffer.from([id & 0xff]))
    .update(Buffer.from(secret, 'utf8'))
    .update(challenge)
    .digest();
}

/** One connection's login negotiation, target side. */
export class TargetLoginNegotiator {
  readonly params: SessionParams = { ...defaultSessionParams };
  sessionType: 'Normal' | 'Discovery' = 'Normal';
  initiatorName = '';
  initiatorAlias = '';
  targetName = '';
  #config: TargetLoginConfig;
  #offer: SessionParams;
  #first = true;
  #sentTpgt = false;
  #sentMrdsl = false;
  #security: 'start' | 'chap-wait-a' | 'chap-wait-r' | 'done' = 'start';
  #chapId = 0;
  #chapChallenge: Buffer = Buffer.alloc(0);
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #negotiated = new Set<string>();

  constructor(config: TargetLoginConfig) {
    this.#config = config;
    this.#offer = { ...targetOffer, ...config.offer };
    this.params.targetMaxRecvDataSegmentLength = this.#offer.targetMaxRecvDataSegmentLength;
  }

  /** Handles one Login Request and says what to answer. */
  handle(req: LoginRequestPdu): LoginStep {
    const fail = (status: readonly [number, number]): LoginStep => ({
      transit: false,
      csg: req.csg,
      nsg: 0,
      statusClass: status[0],
      statusDetail: status[1],
      keys: [],
      complete: false,
      failed: true,
    });
    if (req.versionMin > 0) return fail(LoginStatus.UnsupportedVersion);
    if (req.csg === 2 || (req.transit && (req.nsg === 2 || req.nsg <= req.csg))) {
      return fail(LoginStatus.InitiatorError);
    }
    // Text split over several requests (C bit): collect, answer with an empty response.
    const piece = req.data ?? Buffer.alloc(0);
    this.#pendingBytes += piece.length;
    if (this.#pendingBytes > (this.#config.maxTextBytes ?? 65536)) {
      this.#pending = [];
      return fail(LoginStatus.InitiatorError);
    }
    if (req.continue) {
      this.#pending.push(piece);
      return {
        transit: false,
        csg: req.csg,
        nsg: 0,
        statusClass: 0,
        statusDetail: 0,
        keys: [],
        complete: false,
        failed: false,
      };
    }
    const text = Buffer.concat([...this.#pending, piece]);
    this.#pending = [];
    this.#pendingBytes = 0;
    let keys: Map<string, string>;
    try {
      keys = decodeText(text);
    } catch {
      return fail(LoginStatus.InitiatorError);
    }
    const out: Array<[string, string]> = [];

    if (this.#first) {
      this.#first = false;
      const initiatorName = keys.get('InitiatorName');
      if (!initiatorName) return fail(LoginStatus.MissingParameter);
      this.initiatorName = initiatorName;
      const st = keys.get('SessionType') ?? 'Normal';
      if (st !== 'Normal' && st !== 'Discovery') return fail(LoginStatus.SessionTypeNotSupported);
      this.sessionType = st;
      if (st === 'Normal') {
        const tn = keys.get('TargetName');
        if (!tn) return fail(LoginStatus.MissingParameter);
        if (!this.#config.hasTarget(tn)) return fail(LoginStatus.NotFound);
        this.targetName = tn;
      }
    }
    const alias = keys.get('InitiatorAlias');
    if (alias !== undefined) this.initiatorAlias = alias;

    // Security stage.
    let securityOk = this.#security === 'done' || !this.#config.chap;
    if (req.csg === Stage.Security) {
      const r = this.#securityStep(keys, out);
      if (r === 'fail') return fail(LoginStatus.AuthenticationFailure);
      securityOk = r === 'done';
    } else if (this.#config.chap && this.#security !== 'done') {
      // Skipped the security stage although authentication is required.
      return fail(LoginStatus.AuthenticationFailure);
    }

    // Operational keys (legal in either stage when not security keys).
    for (const [k, v] of keys) {
      if (k === 'AuthMethod' || k.startsWith('CHAP_')) continue;
      if (declarative.has(k)) {
        if (k === 'MaxRecvDataSegmentLength') {
          const n = Number(v);
          if (!Number.isInteger(n) || n < 512 || n > 16777215) {
            out.push([k, 'Reject']);
          } else {
            this.params.initiatorMaxRecvDataSegmentLength = n;
          }
        }
        continue;
      }
      out.push([k, this.#negotiate(k, v)]);
    }

    if (this.sessionType === 'Normal' && !this.#sentTpgt) {
      this.#sentTpgt = true;
      out.push(['TargetPortalGroupTag', String(this.#config.portalGroupTag)]);
    }
    const goingOperationalOrDone =
      req.csg === Stage.Operational || (req.transit && req.nsg === Stage.FullFeature);
    if (goingOperationalOrDone && !this.#sentMrdsl) {
      this.#sentMrdsl = true;
      out.push(['MaxRecvDataSegmentLength', String(this.#offer.targetMaxRecvDataSegmentLength)]);
    }
    const transit = req.transit && securityOk;
    const complete = transit && req.nsg === Stage.FullFeature;
    if (complete) {
      // FirstBurstLength may not exceed MaxBurstLength (RFC 7143 §13.14).
      if (this.params.firstBurstLength > this.params.maxBurstLength) {
        this.params.firstBurstLength = this.params.maxBurstLength;
      }
    }
    return {
      transit,
      csg: req.csg,
      nsg: transit ? req.nsg : 0,
      statusClass: 0,
      statusDetail: 0,
      keys: out,
      complete,
      failed: false,
    };
  }

  #securityStep(keys: Map<string, string>, out: Array<[string, string]>): 'fail' | 'wait' | 'done' {
    const chap = this.#config.chap;
    const methods = keys.get('AuthMethod');
    if (this.#security === 'start') {
      if (methods === undefined) {
        if (chap) return 'fail';
        this.#security = 'done';
        return 'done';
      }
      const offered = methods.split(',');
      if (chap) {
        if (!offered.includes('CHAP')) {
          out.push(['AuthMethod', 'Reject']);
          return 'fail';
        }
        out.push(['AuthMethod', 'CHAP']);
        this.#security = 'chap-wait-a';
        return 'wait';
      }
      if (!offered.includes('None')) {
        out.push(['AuthMethod', 'Reject']);
        return 'fail';
      }
      out.push(['AuthMethod', 'None']);
      this.#security = 'done';
      return 'done';
    }
    if (this.#security === 'chap-wait-a') {
      const algs = (keys.get('CHAP_A') ?? '').split(',');
      if (!algs.includes('5')) {
        out.push(['CHAP_A', 'Reject']);
        return 'fail';
      }
      const rnd = this.#config.random ?? randomBytes;
      this.#chapId = rnd(1)[0]!;
      this.#chapChallenge = rnd(16);
      out.push(['CHAP_A', '5']);
      out.push(['CHAP_I', String(this.#chapId)]);
      out.push(['CHAP_C', `0x${this.#chapChallenge.toString('hex')}`]);
      this.#security = 'chap-wait-r';
      return 'wait';
    }
    if (this.#security === 'chap-wait-r') {
      const chapCfg = chap!;
      const name = keys.get('CHAP_N');
      const resp = parseChapBinary(keys.get('CHAP_R') ?? '');
      if (name !== chapCfg.username || !resp) return 'fail';
      const expected = chapResponse(this.#chapId, chapCfg.secret, this.#chapChallenge);
      if (!expected.equals(resp)) return 'fail';
      // Mutual CHAP: the initiator challenges the target.
      const mi = keys.get('CHAP_I');
      const mc = keys.get('CHAP_C');
      if (mi !== undefined || mc !== undefined) {
        const mutual = this.#config.mutualChap;
        const challenge = parseChapBinary(mc ?? '');
        const id = Number(mi);
        if (
          !mutual ||
          !challenge ||
          !Number.isInteger(id) ||
          challenge.equals(this.#chapChallenge)
        ) {
          return 'fail';
        }
        out.push(['CHAP_N', mutual.username]);
        out.push(['CHAP_R', `0x${chapResponse(id, mutual.secret, challenge).toString('hex')}`]);
      }
      this.#security = 'done';
      return 'done';
    }
    return 'done';
  }

  #negotiate(key: string, value: string): string {
    if (this.#negotiated.has(key)) return 'Reject';
    this.#negotiated.add(key);
    if (key === 'HeaderDigest' || key === 'DataDigest') {
      return value.split(',').includes('None') ? 'None' : 'Reject';
    }
    const num = numericKeys[key];
    if (num) {
      const [field, fn, lo, hi] = num;
      const n = Number(value);
      if (!/^\d+$/.test(value) || n < lo || n > hi) return 'Reject';
      const mine = this.#offer[field];
      const result = fn === 'min' ? Math.min(n, mine) : Math.max(n, mine);
      this.params[field] = result;
      return String(result);
    }
    const bool = boolKeys[key];
    if (bool) {
      if (value !== 'Yes' && value !== 'No') return 'Reject';
      const [field, fn] = bool;
      const theirs = value === 'Yes';
      const result = fn === 'or' ? theirs || this.#offer[field] : theirs && this.#offer[field];
      this.params[field] = result;
      return yesNo(result);
    }
    switch (key) {
      case 'IFMarker':
      case 'OFMarker':
        return 'No';
      case 'IFMarkInt':
      case 'OFMarkInt':
        return 'Irrelevant';
      case 'TargetAlias':
      case 'TargetAddress':
      case 'TargetPortalGroupTag':
        return 'Reject';
      case 'iSCSIProtocolLevel':
        return /^\d+$/.test(value) ? String(Math.min(Number(value), 1)) : 'Reject';
      default:
        return 'NotUnderstood';
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Initiator side

/** What a failed login's Status-Class/Status-Detail means, and what to fix (no secrets). */
export function describeLoginStatus(statusClass: number, statusDetail: number): string {
  const code = `status ${statusClass}/0x${statusDetail.toString(16).padStart(2, '0')}`;
  if (statusClass === 1) {
    return `the target redirected the login (${code}): connect to the portal it names (TargetAddress) instead`;
  }
  if (statusClass === 2) {
    switch (statusDetail) {
      case 0x01:
        return `authentication failed (${code}): check the CHAP user name and secret (LBA_STATUS_CHAP_SECRET or --chap-secret-file FILE), or give them if the target requires CHAP`;
      case 0x02:
        return `this initiator is not authorized for the target (${code}): check the target's access list for the initiator name`;
      case 0x03:
        return `the target IQN was not found on this portal (${code}): check the IQN in the URL (SendTargets discovery lists the targets a portal serves)`;
      case 0x04:
        return `the target was removed (${code}): check that the volume is still attached`;
      case 0x05:
        return `the target does not support iSCSI version 0 (${code})`;
      case 0x06:
        return `the target refused another connection (${code}): too many connections; close other sessions to this target`;
      case 0x07:
        return `the target says a login parameter is missing (${code})`;
      case 0x08:
        return `the target cannot include this connection in the session (${code})`;
      case 0x09:
        return `the target does not support this session type (${code})`;
      case 0x0a:
        return `the session to reinstate does not exist on the target (${code})`;
      case 0x0b:
        return `the target received a request that is invalid during login (${code})`;
      default:
        return `the target refused the login as an initiator error (${code})`;
    }
  }
  if (statusClass === 3) {
    switch (statusDetail) {
      case 0x01:
        return `the target service is unavailable (${code}): retry later`;
      case 0x02:
        return `the target is out of resources (${code}): retry later or close other sessions`;
      default:
        return `the target reported an error (${code}): retry later`;
    }
  }
  return `the target refused the login (${code})`;
}

/** True when retrying the same login later may succeed (target errors, not our mistakes). */
export function isTransientLoginStatus(statusClass: number): boolean {
  return statusClass === 3;
}
