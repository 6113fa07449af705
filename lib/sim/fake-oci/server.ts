/**
 * A fake OCI Core API on 127.0.0.1: the calls the delta provisioner makes under /20160918 plus the
 * instance metadata endpoint. It verifies request signatures (401 otherwise), walks lifecycle
 * states over time, answers the documented 400/403/404/409 cases for delta volumes, honours
 * opc-retry-token, and injects failures (429/500/…) on demand. Its iSCSI attachments point where
 * the injectable `attachTarget` callback says (a simulator target in end-to-end runs).
 *
 * Bounded by design ({@link FakeOciLimits}, defaults in {@link FAKE_OCI_LIMITS}): the signature
 * headers are checked and the body size is checked from Content-Length before a byte of the body
 * is read (401 / 413, then the connection is closed without reading the rest); a chunked body is
 * cut off at the limit while it streams (413); the request log keeps the most recent
 * `requestLogSize` entries; request heads, whole requests, idle keep-alive sockets and the number
 * of connections are limited. Deleted volumes stay TERMINATED and detached attachments DETACHED
 * for `delays.forgetMs`, then are gone (404) and forgotten.
 *
 * A fleet: `addInstance()` adds instances (the first one is `instance`). Each instance holds at
 * most `maxAttachmentsPerInstance` attachments that are not DETACHED (default 32, the block volume
 * attachment limit of most OCI shapes); one more is refused with 400 LimitExceeded. The instance
 * metadata endpoint answers for the first instance at `/opc/v2/instance/` and for any instance at
 * `/imds/<instance OCID>/opc/v2/instance/` (an `imdsUrl` of `<endpoint>/imds/<instance OCID>`).
 *
 * Errors carry OCI's shape, `{"code": "...", "message": "..."}` with an `opc-request-id` header,
 * and the codes of OCI's API error list: 400 MissingParameter / InvalidParameter /
 * CannotParseRequest, 401 NotAuthenticated, 404 NotAuthorizedOrNotFound (unknown resource,
 * compartment or availability domain) or NotFound (no such operation), 405 MethodNotAllowed,
 * 409 Conflict / IncorrectState / InvalidatedRetryToken. OCI's list has no entry for the limits'
 * 408, 413 and 431: those carry the HTTP reason phrase as their code (RequestTimeout,
 * PayloadTooLarge, RequestHeaderFieldsTooLarge) in the same shape.
 */
import { createHash, randomUUID } from 'node:crypto';
import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  type FakeOciCredentials,
  fakeOcid,
  generateFakeCredentials,
  writeOciConfig,
} from './credentials.js';
import {
  type HeadVerifyResult,
  verifyOciSignatureBody,
  verifyOciSignatureHead,
} from './signature.js';

export type FakeOperation =
  | 'GetVolumeBackup'
  | 'ListVolumeBackups'
  | 'GetBootVolumeBackup'
  | 'ListBootVolumeBackups'
  | 'CreateVolume'
  | 'GetVolume'
  | 'DeleteVolume'
  | 'ListVolumes'
  | 'CreateBootVolume'
  | 'GetBootVolume'
  | 'DeleteBootVolume'
  | 'ListBootVolumes'
  | 'AttachVolume'
  | 'GetVolumeAttachment'
  | 'DetachVolume'
  | 'ListVolumeAttachments'
  | 'GetInstance'
  | 'InstanceMetadata';

export interface FakeBackup {
  id: string;
  kind: 'block' | 'boot';
  compartmentId: string;
  /** Source volume (volumeId or bootVolumeId). */
  volumeId: string;
  type: 'FULL' | 'INCREMENTAL';
  lifecycleState: string;
  timeCreated: string;
  sizeInGBs: number;
  sizeInMBs: number;
  displayName: string;
  /** Anything a simulator needs to emulate the data of this backup (opaque here). */
  payload?: unknown;
}

export interface FakeInstance {
  id: string;
  compartmentId: string;
  availabilityDomain: string;
  region: string;
  displayName: string;
}

export interface AttachTargetContext {
  volume: Record<string, unknown> & { id: string; sizeInMBs: number };
  kind: 'block' | 'boot';
  firstBackup: FakeBackup;
  secondBackup: FakeBackup;
  changeBlockSize: number;
  attachmentId: string;
}

export interface AttachTarget {
  ipv4: string;
  port: number;
  iqn: string;
  chap?: { username: string; secret: string };
}

export interface FakeOciDelays {
  /** PROVISIONING → AVAILABLE (default 30 ms). */
  provisionMs?: number;
  /** ATTACHING → ATTACHED (default 30 ms). */
  attachMs?: number;
  /** DETACHING → DETACHED (default 30 ms). */
  detachMs?: number;
  /** TERMINATING → TERMINATED (default 30 ms). */
  terminateMs?: number;
  /**
   * TERMINATED volumes and DETACHED attachments are still shown (GET, list) for this long, then
   * answer 404 and are dropped from memory (default 300 000 ms = 5 min).
   */
  forgetMs?: number;
}

/** Resource limits of the fake API's HTTP server (see {@link FAKE_OCI_LIMITS} for defaults). */
export interface FakeOciLimits {
  /**
   * Largest request body in bytes. A larger Content-Length is refused with 413 before the body
   * is read; a chunked body is cut off at this size with 413.
   */
  maxBodyBytes?: number;
  /** Largest request head (request line + headers) in bytes; larger → 431. */
  maxHeaderBytes?: number;
  /** Entries kept in `requests` (the most recent ones; older ones are dropped). */
  requestLogSize?: number;
  /** Time allowed to receive a request's head, in ms (then 408 and the socket is closed). */
  headersTimeoutMs?: number;
  /** Time allowed to receive a whole request, head and body, in ms (then 408). */
  requestTimeoutMs?: number;
  /** An idle keep-alive connection is closed after this many ms. */
  keepAliveTimeoutMs?: number;
  /** A connection with no traffic at all is closed after this many ms. */
  idleTimeoutMs?: number;
  /** Most connections open at once; more are closed as soon as they are accepted. */
  maxConnections?: number;
}

/** Default limits of the fake API (documented; `sim serve --oci-api` uses these). */
export const FAKE_OCI_LIMITS: Readonly<Required<FakeOciLimits>> = Object.freeze({
  maxBodyBytes: 1 << 20,
  maxHeaderBytes: 16 << 10,
  requestLogSize: 1000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 128,
});

/** Longest path and retry token kept in a request log entry (longer ones are cut). */
const LOG_FIELD_MAX = 256;

export interface FakeOciApiOptions {
  /** Port (default 0 = any free port). */
  port?: number;
  delays?: FakeOciDelays;
  /** Where attachments point; default a dummy link-local portal. */
  attachTarget?: (ctx: AttachTargetContext) => AttachTarget | Promise<AttachTarget>;
  /** Called when an attachment is detached (stop the simulator target). */
  detachTarget?: (ctx: AttachTargetContext) => void | Promise<void>;
  /** Whether the delta feature is enabled for the tenancy (404 otherwise, as OCI documents). */
  deltaFeatureEnabled?: boolean;
  /** Accept requests without a valid signature (never in tests of the signer). */
  allowUnsigned?: boolean;
  region?: string;
  availabilityDomain?: string;
  /** HTTP server limits; unset fields take {@link FAKE_OCI_LIMITS}. */
  limits?: FakeOciLimits;
  /**
   * Attachments (not DETACHED) one instance may hold; one more is refused with 400
   * LimitExceeded (default {@link DEFAULT_MAX_ATTACHMENTS_PER_INSTANCE}).
   */
  maxAttachmentsPerInstance?: number;
}

/** Default per-instance attachment limit: 32, OCI's block volume limit for most shapes. */
export const DEFAULT_MAX_ATTACHMENTS_PER_INSTANCE = 32;

/** A failure injected on demand. */
export interface OciFaultSpec {
  operation?: FakeOperation;
  method?: string;
  /** Matched against the path after /20160918. */
  path?: RegExp;
  status: number;
  /** OCI error code in the body (default from the status: TooManyRequests, InternalServerError…). */
  code?: string;
  message?: string;
  /** How many times (default 1; Infinity for always). */
  times?: number;
  /** `before` (default): fail without doing anything; `after`: do the work, then lose the answer. */
  when?: 'before' | 'after';
}

/** One entry of the request log (path and retry token cut to 256 characters). */
export interface FakeRequestLog {
  method: string;
  path: string;
  operation: FakeOperation | 'unknown';
  /** HTTP status answered; 0 while in progress, -1 when the client went away first. */
  status: number;
  retryToken?: string;
}

type Timeline = Array<[number, string]>;
interface VolumeRec {
  kind: 'block' | 'boot';
  json: Record<string, unknown> & { id: string; compartmentId: string; sizeInMBs: number };
  timeline: Timeline;
  ctx?: Omit<AttachTargetContext, 'attachmentId' | 'volume'>;
}
interface AttachmentRec {
  json: Record<string, unknown> & {
    id: string;
    volumeId: string;
    instanceId: string;
    compartmentId: string;
  };
  timeline: Timeline;
  ctx: AttachTargetContext;
  detachNotified: boolean;
}

type Route = {
  op: FakeOperation;
  run: (
    body: Record<string, unknown>,
    q: URLSearchParams,
    token?: string,
  ) => Promise<{ status?: number; json?: unknown; headers?: Record<string, string> }>;
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const DEFAULT_CODES: Record<number, string> = {
  400: 'InvalidParameter',
  401: 'NotAuthenticated',
  403: 'NotAuthorized',
  404: 'NotAuthorizedOrNotFound',
  405: 'MethodNotAllowed',
  408: 'RequestTimeout',
  409: 'Conflict',
  413: 'PayloadTooLarge',
  429: 'TooManyRequests',
  431: 'RequestHeaderFieldsTooLarge',
  500: 'InternalServerError',
  503: 'ServiceUnavailable',
};

const API = '/20160918';

export class FakeOciApi {
  readonly options: FakeOciApiOptions;
  readonly delays: Required<FakeOciDelays>;
  readonly region: string;
  readonly availabilityDomain: string;
  readonly compartmentId: string;
  readonly limits: Readonly<Required<FakeOciLimits>>;
  /** Attachments (not DETACHED) one instance may hold (see FakeOciApiOptions). */
  maxAttachmentsPerInstance: number;
  /**
   * The most recent requests (at most `limits.requestLogSize`, oldest first), signed or not.
   * Tests may filter it or empty it (`requests.length = 0`).
   */
  readonly requests: FakeRequestLog[] = [];
  #requestCount = 0;
  deltaFeatureEnabled: boolean;
  /** Final state a new volume reaches (AVAILABLE, or FAULTY to simulate a failed restore). */
  volumeOutcome: 'AVAILABLE' | 'FAULTY' = 'AVAILABLE';
  /** Final state a new attachment reaches (ATTACHED, or DETACHED to simulate a failed attach). */
  attachOutcome: 'ATTACHED' | 'DETACHED' = 'ATTACHED';
  readonly #keys = new Map<string, string>();
  readonly #backups = new Map<string, FakeBackup>();
  readonly #volumes = new Map<string, VolumeRec>();
  readonly #attachments = new Map<string, AttachmentRec>();
  readonly #instances = new Map<string, FakeInstance>();
  readonly #tokens = new Map<string, { hash: string; id: string }>();
  readonly #compartments = new Set<string>();
  readonly #availabilityDomains = new Set<string>();
  #faults: Array<OciFaultSpec & { left: number }> = [];
  #server: Server | undefined;
  #port = 0;
  readonly instance: FakeInstance;

  constructor(options: FakeOciApiOptions = {}) {
    this.options = options;
    this.delays = {
      provisionMs: 30,
      attachMs: 30,
      detachMs: 30,
      terminateMs: 30,
      forgetMs: 300_000,
      ...options.delays,
    };
    this.limits = checkLimits({ ...FAKE_OCI_LIMITS, ...options.limits });
    this.deltaFeatureEnabled = options.deltaFeatureEnabled ?? true;
    const maxAttach = options.maxAttachmentsPerInstance ?? DEFAULT_MAX_ATTACHMENTS_PER_INSTANCE;
    if (!Number.isSafeInteger(maxAttach) || maxAttach < 1)
      throw new RangeError(
        `maxAttachmentsPerInstance must be a positive integer; got ${String(maxAttach)}`,
      );
    this.maxAttachmentsPerInstance = maxAttach;
    this.region = options.region ?? 'us-ashburn-1';
    this.availabilityDomain = options.availabilityDomain ?? 'Uocm:US-ASHBURN-AD-1';
    this.compartmentId = fakeOcid('compartment');
    this.#compartments.add(this.compartmentId);
    this.#availabilityDomains.add(this.availabilityDomain);
    this.instance = this.addInstance();
  }

  /** Requests received since start, including those no longer in `requests`. */
  get requestCount(): number {
    return this.#requestCount;
  }

  // ---- setup ---------------------------------------------------------------------------------

  /** Trusts a public key for `tenancy/user/fingerprint`. */
  registerKey(creds: Pick<FakeOciCredentials, 'keyId' | 'publicKeyPem'>): void {
    this.#keys.set(creds.keyId, creds.publicKeyPem);
    // The tenancy is the root compartment.
    const tenancy = creds.keyId.split('/')[0];
    if (tenancy) this.#compartments.add(tenancy);
  }

  /**
   * Makes a compartment known (requests naming an unknown one get 404 NotAuthorizedOrNotFound).
   * Instances and backups added with their own compartmentId make it known too.
   */
  addCompartment(id: string = fakeOcid('compartment')): string {
    this.#compartments.add(id);
    return id;
  }

  /** Generates a key pair, trusts it, and (with `dir`) writes an OCI config file for it. */
  async createCredentials(dir?: string): Promise<FakeOciCredentials> {
    const creds = generateFakeCredentials({ region: this.region });
    this.registerKey(creds);
    return dir ? writeOciConfig(dir, creds) : creds;
  }

  addInstance(partial: Partial<FakeInstance> = {}): FakeInstance {
    const inst: FakeInstance = {
      id: fakeOcid('instance', this.region),
      compartmentId: this.compartmentId,
      availabilityDomain: this.availabilityDomain,
      region: this.region,
      displayName: 'fake-instance',
      ...partial,
    };
    this.#instances.set(inst.id, inst);
    this.#compartments.add(inst.compartmentId);
    this.#availabilityDomains.add(inst.availabilityDomain);
    return inst;
  }

  /** Every instance, the first (`instance`) first. */
  instances(): FakeInstance[] {
    return [...this.#instances.values()].map((i) => ({ ...i }));
  }

  /** The instance metadata base URL (`imdsUrl`) of an instance of this API. */
  imdsUrl(instanceId: string = this.instance.id): string {
    return `${this.endpoint}/imds/${encodeURIComponent(instanceId)}`;
  }

  addBackup(partial: Partial<FakeBackup> & { kind?: 'block' | 'boot' } = {}): FakeBackup {
    const kind = partial.kind ?? 'block';
    const sizeInGBs = partial.sizeInGBs ?? 1;
    const b: FakeBackup = {
      id: fakeOcid(kind === 'block' ? 'volumebackup' : 'bootvolumebackup', this.region),
      kind,
      compartmentId: this.compartmentId,
      volumeId: fakeOcid(kind === 'block' ? 'volume' : 'bootvolume', this.region),
      type: 'INCREMENTAL',
      lifecycleState: 'AVAILABLE',
      timeCreated: new Date().toISOString(),
      sizeInGBs,
      sizeInMBs: sizeInGBs * 1024,
      displayName: 'fake-backup',
      ...partial,
    };
    if (partial.sizeInMBs === undefined) b.sizeInMBs = b.sizeInGBs * 1024;
    this.#backups.set(b.id, b);
    this.#compartments.add(b.compartmentId);
    return b;
  }

  /** A full backup then an incremental one of the same volume, an hour apart. */
  seedBackupPair(
    o: {
      kind?: 'block' | 'boot';
      sizeInGBs?: number;
      firstPayload?: unknown;
      secondPayload?: unknown;
    } = {},
  ): {
    first: FakeBackup;
    second: FakeBackup;
  } {
    const t = Date.now() - 2 * 3_600_000;
    const first = this.addBackup({
      kind: o.kind ?? 'block',
      type: 'FULL',
      sizeInGBs: o.sizeInGBs ?? 1,
      timeCreated: new Date(t).toISOString(),
      payload: o.firstPayload,
    });
    const second = this.addBackup({
      kind: o.kind ?? 'block',
      volumeId: first.volumeId,
      type: 'INCREMENTAL',
      sizeInGBs: o.sizeInGBs ?? 1,
      timeCreated: new Date(t + 3_600_000).toISOString(),
      payload: o.secondPayload,
    });
    return { first, second };
  }

  backup(id: string): FakeBackup | undefined {
    return this.#backups.get(id);
  }

  /** Injects failures; they are used up in order of registration. */
  inject(fault: OciFaultSpec): void {
    this.#faults.push({ ...fault, left: fault.times ?? 1 });
  }

  clearFaults(): void {
    this.#faults = [];
  }

  /** Volumes not TERMINATED and attachments not DETACHED: what a clean run must leave empty. */
  leftovers(): string[] {
    const out: string[] = [];
    for (const v of this.#volumes.values()) {
      const s = stateAt(v.timeline);
      if (s !== 'TERMINATED')
        out.push(`${v.kind === 'block' ? 'volume' : 'boot volume'} ${v.json.id} ${s}`);
    }
    for (const a of this.#attachments.values()) {
      const s = stateAt(a.timeline);
      if (s !== 'DETACHED') out.push(`attachment ${a.json.id} ${s}`);
    }
    return out;
  }

  /** Current JSON of a volume (block or boot), or undefined. */
  volume(id: string): Record<string, unknown> | undefined {
    const v = this.#volumes.get(id);
    return v ? { ...v.json, lifecycleState: stateAt(v.timeline) } : undefined;
  }

  volumes(): Array<Record<string, unknown>> {
    return [...this.#volumes.keys()].map((id) => this.volume(id) as Record<string, unknown>);
  }

  attachments(): Array<Record<string, unknown>> {
    return [...this.#attachments.values()].map((a) => ({
      ...a.json,
      lifecycleState: stateAt(a.timeline),
    }));
  }

  /**
   * Creates a tagged delta volume and attachment directly (as a crashed run would leave them),
   * for sweep tests. Returns their ids.
   */
  async plantOrphan(o: {
    tags: Record<string, string>;
    attach?: boolean;
    instanceId?: string;
  }): Promise<{ volumeId: string; attachmentId?: string }> {
    const { first, second } = this.seedBackupPair();
    const rec = this.makeVolume(
      'block',
      {
        compartmentId: this.compartmentId,
        availabilityDomain: this.availabilityDomain,
        displayName: 'orphan',
        freeformTags: o.tags,
        sourceDetails: {
          type: 'volumeBackupDelta',
          firstBackupId: first.id,
          secondBackupId: second.id,
          changeBlockSizeInBytes: 4096,
        },
      },
      first,
      second,
      4096,
      0,
    );
    if (!o.attach) return { volumeId: rec.json.id };
    const a = await this.makeAttachment(rec, o.instanceId ?? this.instance.id, 'orphan', 0);
    return { volumeId: rec.json.id, attachmentId: a.json.id };
  }

  // ---- server --------------------------------------------------------------------------------

  get port(): number {
    return this.#port;
  }

  /** Base URL for `client.endpoint` and for the IMDS URL (same server). */
  get endpoint(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  async start(): Promise<this> {
    const L = this.limits;
    const server = createServer(
      {
        maxHeaderSize: L.maxHeaderBytes,
        headersTimeout: L.headersTimeoutMs,
        requestTimeout: L.requestTimeoutMs,
        // How often Node checks the two timeouts above (its default, 30 s, would let a slow
        // client hold a socket up to 30 s past them).
        connectionsCheckingInterval: Math.max(50, Math.min(1000, L.headersTimeoutMs / 2)),
      },
      (req, res) => this.dispatch(req, res, false),
    );
    server.keepAliveTimeout = L.keepAliveTimeoutMs;
    server.maxConnections = L.maxConnections;
    // No 'timeout' listener: Node destroys a socket idle for this long.
    server.setTimeout(L.idleTimeoutMs);
    // Expect: 100-continue: the signature and the size are checked before "100 Continue" is sent.
    server.on('checkContinue', (req, res) => this.dispatch(req, res, true));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) =>
      this.onClientError(err, socket),
    );
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port ?? 0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#port = (server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    const s = this.#server;
    if (!s) return;
    this.#server = undefined;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- request handling ----------------------------------------------------------------------

  private dispatch(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void {
    this.handle(req, res, expectContinue).catch((err: unknown) => {
      if (!res.headersSent) {
        const payload = JSON.stringify({
          code: 'InternalServerError',
          message: String((err as Error)?.message ?? err),
        });
        res.writeHead(500, {
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(payload)),
          'opc-request-id': requestId(),
          ...(req.complete ? {} : { connection: 'close' }),
        });
        res.end(payload);
      } else res.destroy();
    });
  }

  /** A request Node's parser refused (head too large, timeout, bad framing): OCI's error shape. */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const status =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? 431
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? 408
          : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW'
            ? 413
            : 400;
    const code = status === 400 ? 'CannotParseRequest' : (DEFAULT_CODES[status] as string);
    const message =
      status === 431
        ? `the request head exceeds ${this.limits.maxHeaderBytes} bytes`
        : status === 408
          ? `the request was not received within the server's time limit (head ${this.limits.headersTimeoutMs} ms, whole request ${this.limits.requestTimeoutMs} ms)`
          : `the request cannot be parsed (${err.code ?? 'error'})`;
    const payload = JSON.stringify({ code, message });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\n` +
        `content-length: ${Buffer.byteLength(payload)}\r\nopc-request-id: ${requestId()}\r\n` +
        `connection: close\r\n\r\n${payload}`,
      () => socket.destroy(),
    );
  }

  /** Appends to the bounded request log (copies of the fields, cut to LOG_FIELD_MAX). */
  private logRequest(method: string, path: string, token: unknown): FakeRequestLog {
    const entry: FakeRequestLog = {
      method: ownCopy(method),
      path: ownCopy(path),
      operation: 'unknown',
      status: 0,
    };
    if (typeof token === 'string') entry.retryToken = ownCopy(token);
    this.#requestCount += 1;
    const log = this.requests;
    log.push(entry);
    const over = log.length - this.limits.requestLogSize;
    if (over > 0) log.splice(0, over);
    return entry;
  }

  private async handle(
    req: IncomingMessage,
    res: ServerResponse,
    expectContinue: boolean,
  ): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const rawUrl = req.url ?? '/';
    const token = req.headers['opc-retry-token'];
    // Whether a body follows the head, and whether it has been read: a reply sent before the
    // body was read closes the connection, so the rest of the body is never read.
    const contentLength = req.headers['content-length'];
    let bodyRead =
      req.headers['transfer-encoding'] === undefined && Number(contentLength ?? 0) === 0;
    let url: URL | undefined;
    try {
      url = new URL(`http://127.0.0.1${rawUrl.startsWith('/') ? '' : '/'}${rawUrl}`);
    } catch {
      url = undefined;
    }
    const log = this.logRequest(method, url?.pathname ?? rawUrl, token);
    const reply = (status: number, json?: unknown, headers: Record<string, string> = {}) => {
      log.status = status;
      const payload = json === undefined ? '' : JSON.stringify(json);
      res.writeHead(status, {
        'opc-request-id': requestId(),
        ...(payload ? { 'content-type': 'application/json' } : {}),
        ...(status === 204 ? {} : { 'content-length': String(Buffer.byteLength(payload)) }),
        ...(bodyRead ? {} : { connection: 'close' }),
        ...headers,
      });
      res.end(payload);
    };
    const fail = (status: number, code: string, message: string) =>
      reply(status, { code, message });
    if (!url) {
      fail(400, 'CannotParseRequest', 'the request target is not a valid URL');
      return;
    }

    const imds = /^(?:\/imds\/([^/]+))?\/opc\/v2\/instance\/?$/.exec(url.pathname);
    if (imds) {
      log.operation = 'InstanceMetadata';
      if (req.headers.authorization !== 'Bearer Oracle') {
        fail(401, 'NotAuthenticated', 'IMDS v2 needs the header Authorization: Bearer Oracle');
        return;
      }
      let i: FakeInstance | undefined = this.instance;
      if (imds[1] !== undefined) {
        let id: string | undefined;
        try {
          id = decodeURIComponent(imds[1]);
        } catch {}
        i = id === undefined ? undefined : this.#instances.get(id);
      }
      if (!i) {
        fail(404, 'NotFound', 'there is no instance at this metadata path');
        return;
      }
      reply(200, {
        id: i.id,
        compartmentId: i.compartmentId,
        availabilityDomain: i.availabilityDomain,
        region: i.region,
        canonicalRegionName: i.region,
        displayName: i.displayName,
        shape: 'VM.Standard.E4.Flex',
      });
      return;
    }

    if (!url.pathname.startsWith(`${API}/`)) {
      fail(404, 'NotFound', 'there is no operation at this URI path');
      return;
    }
    const path = url.pathname.slice(API.length);
    const found = this.route(method, path);
    const route = found.route;
    log.operation = route?.op ?? 'unknown';

    // 1. The signature, from the headers alone: an unsigned or badly signed request is refused
    //    before a byte of its body is read.
    let head: HeadVerifyResult | undefined;
    if (!this.options.allowUnsigned) {
      head = verifyOciSignatureHead({ method, url: rawUrl, headers: req.headers }, (k) =>
        this.#keys.get(k),
      );
      if (!head.ok) {
        fail(
          401,
          'NotAuthenticated',
          `The required information to complete authentication was not provided or was incorrect: ${head.reason}`,
        );
        return;
      }
    }
    // 2. The size, from Content-Length, still before reading.
    const max = this.limits.maxBodyBytes;
    if (Number(contentLength ?? 0) > max) {
      fail(413, 'PayloadTooLarge', `the request body exceeds ${max} bytes`);
      return;
    }
    // 3. The body, cut off at the limit when it is chunked.
    let body = EMPTY;
    if (!bodyRead) {
      if (expectContinue) res.writeContinue();
      const got = await readBody(req, max);
      if (got === 'aborted') {
        log.status = -1;
        res.destroy();
        return;
      }
      if (got === 'too-large') {
        fail(413, 'PayloadTooLarge', `the request body exceeds ${max} bytes`);
        return;
      }
      body = got;
      bodyRead = true;
    }
    // 4. The body against its signed digest and length.
    if (head?.ok) {
      const v = verifyOciSignatureBody(head, body);
      if (!v.ok) {
        fail(
          401,
          'NotAuthenticated',
          `The required information to complete authentication was not provided or was incorrect: ${v.reason}`,
        );
        return;
      }
    }
    this.forget();
    if (!route) {
      if (found.otherMethods)
        fail(405, 'MethodNotAllowed', `${method} is not supported on ${path}`);
      else fail(404, 'NotFound', `there is no operation for ${method} ${path}`);
      return;
    }
    const fault = this.takeFault(route.op, method, path);
    if (fault && fault.when !== 'after') {
      reply(fault.status, {
        code: fault.code ?? DEFAULT_CODES[fault.status] ?? 'Error',
        message: fault.message ?? `injected ${fault.status}`,
      });
      return;
    }
    let parsed: Record<string, unknown> = {};
    if (body.length > 0) {
      let value: unknown;
      try {
        value = JSON.parse(body.toString('utf8'));
      } catch {
        fail(400, 'CannotParseRequest', 'the request body is not valid JSON');
        return;
      }
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        fail(400, 'CannotParseRequest', 'the request body must be a JSON object');
        return;
      }
      parsed = value as Record<string, unknown>;
    }
    try {
      const out = await route.run(
        parsed,
        url.searchParams,
        typeof token === 'string' ? token : undefined,
      );
      if (fault) {
        reply(fault.status, {
          code: fault.code ?? DEFAULT_CODES[fault.status] ?? 'Error',
          message: fault.message ?? `injected ${fault.status} after the work was done`,
        });
        return;
      }
      reply(out.status ?? 200, out.json, out.headers);
    } catch (err) {
      if (err instanceof HttpError) fail(err.status, err.code, err.message);
      else throw err;
    }
  }

  /** Drops volumes TERMINATED and attachments DETACHED for longer than `forgetMs`. */
  private forget(now = Date.now()): void {
    const gone = (t: Timeline, final: string) => {
      const last = t[t.length - 1] as [number, string];
      return last[1] === final && now >= last[0] + this.delays.forgetMs;
    };
    for (const [id, v] of this.#volumes)
      if (gone(v.timeline, 'TERMINATED')) this.#volumes.delete(id);
    for (const [id, a] of this.#attachments)
      if (gone(a.timeline, 'DETACHED')) this.#attachments.delete(id);
    for (const [k, t] of this.#tokens)
      if (!this.#volumes.has(t.id) && !this.#attachments.has(t.id)) this.#tokens.delete(k);
  }

  private takeFault(op: FakeOperation, method: string, path: string): OciFaultSpec | undefined {
    const i = this.#faults.findIndex(
      (f) =>
        f.left > 0 &&
        (!f.operation || f.operation === op) &&
        (!f.method || f.method === method) &&
        (!f.path || f.path.test(path)),
    );
    if (i < 0) return undefined;
    const f = this.#faults[i] as OciFaultSpec & { left: number };
    f.left -= 1;
    if (f.left <= 0) this.#faults.splice(i, 1);
    return f;
  }

  /** The operation for a method and path, and whether the path exists with other methods. */
  private route(method: string, path: string): { route?: Route; otherMethods: boolean } {
    let seg: string[];
    try {
      seg = path.split('/').filter(Boolean).map(decodeURIComponent);
    } catch {
      return { otherMethods: false };
    }
    const [a, id, extra] = seg;
    if (extra !== undefined) return { otherMethods: false };
    const resource = `${a}${id !== undefined ? '/:id' : ''}`;
    const route = this.operation(`${method} ${resource}`, id as string);
    if (route) return { route, otherMethods: false };
    return {
      otherMethods: ['GET', 'POST', 'DELETE'].some(
        (m) => m !== method && this.operation(`${m} ${resource}`, id as string) !== undefined,
      ),
    };
  }

  private operation(key: string, id: string): Route | undefined {
    switch (key) {
      case 'GET volumeBackups/:id':
        return {
          op: 'GetVolumeBackup',
          run: async () => ({ json: this.backupJson(this.getBackup(id, 'block')) }),
        };
      case 'GET bootVolumeBackups/:id':
        return {
          op: 'GetBootVolumeBackup',
          run: async () => ({ json: this.backupJson(this.getBackup(id, 'boot')) }),
        };
      case 'GET volumeBackups':
        return { op: 'ListVolumeBackups', run: async (_b, q) => this.listBackups('block', q) };
      case 'GET bootVolumeBackups':
        return { op: 'ListBootVolumeBackups', run: async (_b, q) => this.listBackups('boot', q) };
      case 'POST volumes':
        return { op: 'CreateVolume', run: async (b, _q, t) => this.createVolume('block', b, t) };
      case 'POST bootVolumes':
        return { op: 'CreateBootVolume', run: async (b, _q, t) => this.createVolume('boot', b, t) };
      case 'GET volumes/:id':
        return {
          op: 'GetVolume',
          run: async () => ({ json: this.liveVolumeJson(id, 'block') }),
        };
      case 'GET bootVolumes/:id':
        return {
          op: 'GetBootVolume',
          run: async () => ({ json: this.liveVolumeJson(id, 'boot') }),
        };
      case 'DELETE volumes/:id':
        return { op: 'DeleteVolume', run: async () => this.deleteVolume(id, 'block') };
      case 'DELETE bootVolumes/:id':
        return { op: 'DeleteBootVolume', run: async () => this.deleteVolume(id, 'boot') };
      case 'GET volumes':
        return { op: 'ListVolumes', run: async (_b, q) => this.listVolumes('block', q) };
      case 'GET bootVolumes':
        return { op: 'ListBootVolumes', run: async (_b, q) => this.listVolumes('boot', q) };
      case 'POST volumeAttachments':
        return { op: 'AttachVolume', run: async (b, _q, t) => this.attach(b, t) };
      case 'GET volumeAttachments/:id':
        return {
          op: 'GetVolumeAttachment',
          run: async () => ({ json: this.attachmentJson(this.getAttachment(id)) }),
        };
      case 'DELETE volumeAttachments/:id':
        return { op: 'DetachVolume', run: async () => this.detach(id) };
      case 'GET volumeAttachments':
        return { op: 'ListVolumeAttachments', run: async (_b, q) => this.listAttachments(q) };
      case 'GET instances/:id':
        return {
          op: 'GetInstance',
          run: async () => {
            const i = this.#instances.get(id);
            if (!i) throw notFound(`instance ${id}`);
            return {
              json: {
                ...i,
                lifecycleState: 'RUNNING',
                shape: 'VM.Standard.E4.Flex',
                timeCreated: new Date(0).toISOString(),
              },
            };
          },
        };
      default:
        return undefined;
    }
  }

  /** The compartmentId query parameter: 400 MissingParameter when absent, 404 when unknown. */
  private compartmentParam(q: URLSearchParams): string {
    const cid = requireParam(q, 'compartmentId');
    if (!this.#compartments.has(cid)) throw notFound(`compartment ${cid}`);
    return cid;
  }

  // ---- backups -------------------------------------------------------------------------------

  private getBackup(id: string, kind: 'block' | 'boot'): FakeBackup {
    const b = this.#backups.get(id);
    if (!b || b.kind !== kind)
      throw notFound(`${kind === 'block' ? 'volume' : 'boot volume'} backup ${id}`);
    return b;
  }

  private backupJson(b: FakeBackup): Record<string, unknown> {
    const common = {
      id: b.id,
      compartmentId: b.compartmentId,
      displayName: b.displayName,
      lifecycleState: b.lifecycleState,
      timeCreated: b.timeCreated,
      type: b.type,
      sizeInGBs: b.sizeInGBs,
      freeformTags: {},
      definedTags: {},
      sourceType: 'MANUAL',
    };
    return b.kind === 'block'
      ? { ...common, volumeId: b.volumeId, sizeInMBs: b.sizeInMBs }
      : { ...common, bootVolumeId: b.volumeId };
  }

  private listBackups(kind: 'block' | 'boot', q: URLSearchParams) {
    const cid = this.compartmentParam(q);
    const vid = q.get(kind === 'block' ? 'volumeId' : 'bootVolumeId');
    const items = [...this.#backups.values()].filter(
      (b) => b.kind === kind && b.compartmentId === cid && (!vid || b.volumeId === vid),
    );
    return page(
      items.map((b) => this.backupJson(b)),
      q,
    );
  }

  // ---- volumes -------------------------------------------------------------------------------

  private async createVolume(
    kind: 'block' | 'boot',
    body: Record<string, unknown>,
    token?: string,
  ) {
    const hash = createHash('sha256').update(JSON.stringify(body)).digest('hex');
    if (token) {
      const seen = this.#tokens.get(`create:${token}`);
      if (seen) {
        if (seen.hash !== hash)
          throw new HttpError(
            409,
            'InvalidatedRetryToken',
            'the retry token was used with a different request',
          );
        const v = this.#volumes.get(seen.id);
        if (!v || v.timeline.some(([, st]) => st === 'TERMINATING'))
          throw new HttpError(
            409,
            'InvalidatedRetryToken',
            'the volume created with this retry token has since been deleted; use a new token',
          );
        return { json: this.liveVolumeJson(seen.id, kind), headers: { etag: seen.id } };
      }
    }
    // 400 MissingParameter, then 400 InvalidParameter, then 404 for what does not exist.
    const compartmentId = requiredString(body, 'compartmentId');
    const availabilityDomain = requiredString(body, 'availabilityDomain');
    const src = required(body, 'sourceDetails');
    if (typeof src !== 'object' || Array.isArray(src))
      throw invalid('sourceDetails must be an object');
    const source = src as Record<string, unknown>;
    const type = requiredString(source, 'type', 'sourceDetails.type');
    const expectType = kind === 'block' ? 'volumeBackupDelta' : 'bootVolumeBackupDelta';
    if (type !== expectType) {
      throw invalid(
        `the fake API only creates delta volumes: sourceDetails.type must be ${expectType} (bad type value)`,
      );
    }
    const firstBackupId = requiredString(source, 'firstBackupId', 'sourceDetails.firstBackupId');
    const secondBackupId = requiredString(source, 'secondBackupId', 'sourceDetails.secondBackupId');
    const cbs = source.changeBlockSizeInBytes ?? 4096;
    const backupType = kind === 'block' ? 'volumebackup' : 'bootvolumebackup';
    const ocid = new RegExp(`^ocid1\\.${backupType}\\.[a-z0-9]+\\.[a-z0-9-]*\\.[a-z0-9]+$`);
    for (const [name, idv] of [
      ['firstBackupId', firstBackupId],
      ['secondBackupId', secondBackupId],
    ] as const) {
      if (!ocid.test(idv))
        throw invalid(`sourceDetails.${name}: malformed ${backupType} OCID ${JSON.stringify(idv)}`);
    }
    if (firstBackupId === secondBackupId)
      throw invalid('firstBackupId and secondBackupId are the same');
    if (
      typeof cbs !== 'number' ||
      !Number.isInteger(cbs) ||
      cbs < 4096 ||
      cbs > 1048576 ||
      (cbs & (cbs - 1)) !== 0
    ) {
      throw invalid('changeBlockSizeInBytes must be a power of two from 4096 to 1048576');
    }
    optional(body, 'displayName', 'string');
    optional(body, 'freeformTags', 'tags');
    optional(body, 'definedTags', 'object');
    optional(body, 'kmsKeyId', 'string');
    optional(body, 'backupPolicyId', 'string');
    optional(body, 'isAutoTuneEnabled', 'boolean');
    const vpus = body.vpusPerGB;
    if (
      vpus !== undefined &&
      (typeof vpus !== 'number' ||
        !Number.isInteger(vpus) ||
        vpus < 0 ||
        vpus > 120 ||
        vpus % 10 !== 0)
    ) {
      throw invalid(
        `vpusPerGB ${JSON.stringify(vpus)} is not a performance level: 0 (Lower Cost), 10 (Balanced), 20 (Higher Performance) or 30 to 120 in steps of 10 (Ultra High Performance)`,
      );
    }
    for (const n of ['sizeInGBs', 'sizeInMBs'] as const) {
      const v = body[n];
      if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0))
        throw invalid(`${n} must be a positive integer`);
    }
    if (!this.#compartments.has(compartmentId)) throw notFound(`compartment ${compartmentId}`);
    if (!this.#availabilityDomains.has(availabilityDomain))
      throw notFound(`availability domain ${availabilityDomain}`);
    if (!this.deltaFeatureEnabled)
      throw new HttpError(
        404,
        'NotAuthorizedOrNotFound',
        'the delta volume feature is not enabled for this tenancy',
      );
    if (body.vpusPerGB === 0)
      throw new HttpError(
        404,
        'NotAuthorizedOrNotFound',
        'delta volumes cannot use the Lower Cost performance level',
      );
    const first = this.#backups.get(firstBackupId);
    const second = this.#backups.get(secondBackupId);
    if (!first || first.kind !== kind) throw notFound(`backup ${firstBackupId}`);
    if (!second || second.kind !== kind) throw notFound(`backup ${secondBackupId}`);
    if (first.lifecycleState !== 'AVAILABLE' || second.lifecycleState !== 'AVAILABLE') {
      throw new HttpError(409, 'Conflict', 'both backups must be AVAILABLE');
    }
    if (first.volumeId !== second.volumeId)
      throw new HttpError(403, 'NotAllowed', 'the backups belong to different volumes');
    if (first.sizeInMBs !== second.sizeInMBs)
      throw new HttpError(403, 'NotAllowed', 'the volume was resized between the backups');
    if (Date.parse(first.timeCreated) >= Date.parse(second.timeCreated)) {
      throw new HttpError(400, 'InvalidParameter', 'the first backup is newer than the second');
    }
    if (second.type !== 'INCREMENTAL')
      throw new HttpError(400, 'InvalidParameter', 'the second backup must be incremental');
    const rec = this.makeVolume(kind, body, first, second, cbs, this.delays.provisionMs);
    if (token) this.#tokens.set(`create:${token}`, { hash, id: rec.json.id });
    return {
      json: { ...rec.json, lifecycleState: stateAt(rec.timeline) },
      headers: { etag: rec.json.id },
    };
  }

  private makeVolume(
    kind: 'block' | 'boot',
    body: Record<string, unknown>,
    first: FakeBackup,
    second: FakeBackup,
    cbs: number,
    provisionMs: number,
  ): VolumeRec {
    const now = Date.now();
    const id = fakeOcid(kind === 'block' ? 'volume' : 'bootvolume', this.region);
    const json = {
      id,
      compartmentId: body.compartmentId as string,
      availabilityDomain: body.availabilityDomain as string,
      displayName: (body.displayName as string | undefined) ?? id,
      freeformTags: (body.freeformTags as Record<string, string> | undefined) ?? {},
      definedTags: {},
      systemTags: {},
      sizeInGBs: second.sizeInGBs,
      sizeInMBs: second.sizeInMBs,
      vpusPerGB: (body.vpusPerGB as number | undefined) ?? 10,
      isHydrated: true,
      timeCreated: new Date(now).toISOString(),
      sourceDetails: body.sourceDetails,
    };
    const rec: VolumeRec = {
      kind,
      json,
      timeline: [
        [now, 'PROVISIONING'],
        [now + provisionMs, this.volumeOutcome],
      ],
      ctx: { kind, firstBackup: first, secondBackup: second, changeBlockSize: cbs },
    };
    this.#volumes.set(id, rec);
    return rec;
  }

  private getVolumeRec(id: string, kind: 'block' | 'boot'): VolumeRec {
    const v = this.#volumes.get(id);
    if (!v || v.kind !== kind)
      throw notFound(`${kind === 'block' ? 'volume' : 'boot volume'} ${id}`);
    const last = v.timeline[v.timeline.length - 1] as [number, string];
    if (last[1] === 'TERMINATED' && Date.now() >= last[0] + this.delays.forgetMs) {
      throw notFound(`${kind === 'block' ? 'volume' : 'boot volume'} ${id}`);
    }
    return v;
  }

  private liveVolumeJson(id: string, kind: 'block' | 'boot') {
    const v = this.getVolumeRec(id, kind);
    return { ...v.json, lifecycleState: stateAt(v.timeline) };
  }

  private async deleteVolume(id: string, kind: 'block' | 'boot') {
    const v = this.getVolumeRec(id, kind);
    const s = stateAt(v.timeline);
    if (s === 'TERMINATED') throw notFound(`volume ${id}`);
    if (s === 'TERMINATING') return { status: 204 };
    if (s === 'PROVISIONING' || s === 'RESTORING')
      throw new HttpError(409, 'IncorrectState', `volume ${id} is ${s}`);
    const attached = [...this.#attachments.values()].some(
      (a) => a.json.volumeId === id && stateAt(a.timeline) !== 'DETACHED',
    );
    if (attached)
      throw new HttpError(409, 'IncorrectState', `volume ${id} is still attached; detach it first`);
    const now = Date.now();
    v.timeline.push([now, 'TERMINATING'], [now + this.delays.terminateMs, 'TERMINATED']);
    return { status: 204 };
  }

  private listVolumes(kind: 'block' | 'boot', q: URLSearchParams) {
    const cid = this.compartmentParam(q);
    const now = Date.now();
    const items = [...this.#volumes.values()]
      .filter((v) => v.kind === kind && v.json.compartmentId === cid)
      .filter((v) => {
        const last = v.timeline[v.timeline.length - 1] as [number, string];
        return !(last[1] === 'TERMINATED' && now >= last[0] + this.delays.forgetMs);
      })
      .map((v) => ({ ...v.json, lifecycleState: stateAt(v.timeline) }));
    return page(items, q);
  }

  // ---- attachments ---------------------------------------------------------------------------

  private async attach(body: Record<string, unknown>, token?: string) {
    const hash = createHash('sha256').update(JSON.stringify(body)).digest('hex');
    if (token) {
      const seen = this.#tokens.get(`attach:${token}`);
      if (seen) {
        if (seen.hash !== hash)
          throw new HttpError(
            409,
            'InvalidatedRetryToken',
            'the retry token was used with a different request',
          );
        const a = this.#attachments.get(seen.id);
        if (!a || a.timeline.some(([, st]) => st === 'DETACHING'))
          throw new HttpError(
            409,
            'InvalidatedRetryToken',
            'the attachment created with this retry token has since been detached; use a new token',
          );
        return { json: this.attachmentJson(a) };
      }
    }
    const type = requiredString(body, 'type');
    const instanceId = requiredString(body, 'instanceId');
    const volumeId = requiredString(body, 'volumeId');
    if (type !== 'iscsi') throw invalid('delta volumes can only be attached as iscsi');
    optional(body, 'displayName', 'string');
    optional(body, 'isReadOnly', 'boolean');
    optional(body, 'isShareable', 'boolean');
    optional(body, 'useChap', 'boolean');
    optional(body, 'device', 'string');
    if (!this.#instances.has(instanceId)) throw notFound(`instance ${instanceId}`);
    const v = this.#volumes.get(volumeId);
    if (!v) throw notFound(`volume ${volumeId}`);
    if (stateAt(v.timeline) !== 'AVAILABLE')
      throw new HttpError(409, 'IncorrectState', `volume ${volumeId} is ${stateAt(v.timeline)}`);
    const live = [...this.#attachments.values()].some(
      (a) => a.json.volumeId === volumeId && stateAt(a.timeline) !== 'DETACHED',
    );
    if (live) throw new HttpError(409, 'Conflict', `volume ${volumeId} is already attached`);
    // The instance's attachment limit: what is not DETACHED counts (DETACHING included).
    let held = 0;
    for (const a of this.#attachments.values())
      if (a.json.instanceId === instanceId && stateAt(a.timeline) !== 'DETACHED') held++;
    if (held >= this.maxAttachmentsPerInstance)
      throw new HttpError(
        400,
        'LimitExceeded',
        `instance ${instanceId} already has ${held} volume attachments, the limit for its shape (${this.maxAttachmentsPerInstance}); detach a volume first`,
      );
    const a = await this.makeAttachment(
      v,
      instanceId,
      body.displayName as string | undefined,
      this.delays.attachMs,
      body.isReadOnly === true,
    );
    if (token) this.#tokens.set(`attach:${token}`, { hash, id: a.json.id });
    return {
      json: this.attachmentJson(a),
      headers: { 'opc-work-request-id': fakeOcid('workrequest', this.region) },
    };
  }

  private async makeAttachment(
    v: VolumeRec,
    instanceId: string,
    displayName: string | undefined,
    attachMs: number,
    isReadOnly = true,
  ): Promise<AttachmentRec> {
    const now = Date.now();
    const id = fakeOcid('volumeattachment', this.region);
    const ctx: AttachTargetContext = {
      ...(v.ctx as Omit<AttachTargetContext, 'attachmentId' | 'volume'>),
      volume: { ...v.json },
      attachmentId: id,
    };
    const target = this.options.attachTarget
      ? await this.options.attachTarget(ctx)
      : { ipv4: '169.254.2.2', port: 3260, iqn: `iqn.2015-12.com.oracleiaas:${id.slice(-12)}` };
    const inst = this.#instances.get(instanceId);
    const json = {
      attachmentType: 'iscsi',
      id,
      availabilityDomain: inst?.availabilityDomain ?? this.availabilityDomain,
      compartmentId: inst?.compartmentId ?? v.json.compartmentId,
      instanceId,
      volumeId: v.json.id,
      displayName: displayName ?? id,
      isReadOnly,
      isShareable: false,
      isMultipath: false,
      iscsiLoginState: 'UNKNOWN',
      timeCreated: new Date(now).toISOString(),
      ipv4: target.ipv4,
      port: target.port,
      iqn: target.iqn,
      encryptionInTransitType: 'NONE',
      isAgentAutoIscsiLoginEnabled: false,
      ...(target.chap
        ? { chapUsername: target.chap.username, chapSecret: target.chap.secret }
        : {}),
    };
    const rec: AttachmentRec = {
      json,
      timeline: [
        [now, 'ATTACHING'],
        [now + attachMs, this.attachOutcome],
      ],
      ctx,
      detachNotified: false,
    };
    this.#attachments.set(id, rec);
    return rec;
  }

  private getAttachment(id: string): AttachmentRec {
    const a = this.#attachments.get(id);
    if (!a) throw notFound(`volume attachment ${id}`);
    return a;
  }

  private attachmentJson(a: AttachmentRec) {
    const s = stateAt(a.timeline);
    return { ...a.json, lifecycleState: s };
  }

  private async detach(id: string) {
    const a = this.getAttachment(id);
    const s = stateAt(a.timeline);
    if (s === 'DETACHING' || s === 'DETACHED')
      throw new HttpError(409, 'Conflict', `attachment ${id} is already ${s}`);
    const now = Date.now();
    a.timeline.push([now, 'DETACHING'], [now + this.delays.detachMs, 'DETACHED']);
    if (!a.detachNotified && this.options.detachTarget) {
      a.detachNotified = true;
      await this.options.detachTarget(a.ctx);
    }
    return {
      status: 204,
      headers: { 'opc-work-request-id': fakeOcid('workrequest', this.region) },
    };
  }

  private listAttachments(q: URLSearchParams) {
    const cid = this.compartmentParam(q);
    const vid = q.get('volumeId');
    const iid = q.get('instanceId');
    const items = [...this.#attachments.values()]
      .filter(
        (a) =>
          a.json.compartmentId === cid &&
          (!vid || a.json.volumeId === vid) &&
          (!iid || a.json.instanceId === iid),
      )
      .map((a) => this.attachmentJson(a));
    return page(items, q);
  }
}

const EMPTY: Buffer = Buffer.alloc(0);

function requestId(): string {
  return randomUUID().replace(/-/g, '').toUpperCase();
}

/**
 * A fresh copy of at most LOG_FIELD_MAX characters: a slice would keep the whole parent string
 * (a request's 16 KiB URL) alive as long as the log entry.
 */
function ownCopy(s: string): string {
  const cut = s.length > LOG_FIELD_MAX ? `${s.slice(0, LOG_FIELD_MAX)}…` : s;
  return Buffer.from(cut, 'utf8').toString('utf8');
}

function checkLimits(l: Required<FakeOciLimits>): Required<FakeOciLimits> {
  for (const [k, v] of Object.entries(l)) {
    if (!Number.isSafeInteger(v) || v < 1)
      throw new RangeError(`limits.${k} must be a positive integer; got ${String(v)}`);
  }
  if (l.headersTimeoutMs > l.requestTimeoutMs)
    throw new RangeError('limits.headersTimeoutMs must not exceed limits.requestTimeoutMs');
  return l;
}

/**
 * Reads a request body of at most `limit` bytes. Stops reading (and drops what it has) as soon as
 * more arrives; 'aborted' when the client went away first.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too-large' | 'aborted'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (v: Buffer | 'too-large' | 'aborted') => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onAbort);
      req.off('close', onClose);
      if (v === 'too-large') {
        chunks.length = 0;
        req.pause();
      }
      resolve(v);
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) done('too-large');
      else chunks.push(c);
    };
    const onEnd = () => done(Buffer.concat(chunks, size));
    const onAbort = () => done('aborted');
    const onClose = () => {
      if (!req.complete) done('aborted');
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onAbort);
    req.on('close', onClose);
  });
}

function stateAt(timeline: Timeline, now = Date.now()): string {
  let s = (timeline[0] as [number, string])[1];
  for (const [t, state] of timeline) if (t <= now) s = state;
  return s;
}

function notFound(what: string): HttpError {
  return new HttpError(
    404,
    'NotAuthorizedOrNotFound',
    `${what} does not exist or you are not authorized to see it`,
  );
}

function invalid(message: string): HttpError {
  return new HttpError(400, 'InvalidParameter', message);
}

/** A required body field: 400 MissingParameter when absent (undefined or null). */
function required(obj: Record<string, unknown>, name: string, label = name): unknown {
  const v = obj[name];
  if (v === undefined || v === null)
    throw new HttpError(400, 'MissingParameter', `${label} is required`);
  return v;
}

/** A required string field: MissingParameter when absent, InvalidParameter when not a string. */
function requiredString(obj: Record<string, unknown>, name: string, label = name): string {
  const v = required(obj, name, label);
  if (typeof v !== 'string' || v === '') throw invalid(`${label} must be a non-empty string`);
  return v;
}

/** An optional field of the given type (tags: an object of string values): else InvalidParameter. */
function optional(
  obj: Record<string, unknown>,
  name: string,
  type: 'string' | 'boolean' | 'object' | 'tags',
): void {
  const v = obj[name];
  if (v === undefined) return;
  const isObject = v !== null && typeof v === 'object' && !Array.isArray(v);
  const ok =
    type === 'tags'
      ? isObject && Object.values(v as object).every((x) => typeof x === 'string')
      : type === 'object'
        ? isObject
        : typeof v === type;
  if (!ok)
    throw invalid(
      `${name} must be ${type === 'tags' ? 'an object of string values' : type === 'object' ? 'an object' : `a ${type}`}`,
    );
}

function requireParam(q: URLSearchParams, name: string): string {
  const v = q.get(name);
  if (!v) throw new HttpError(400, 'MissingParameter', `query parameter ${name} is required`);
  return v;
}

/** Paging with `limit` and an opaque numeric `page`, like OCI's opc-next-page. */
function page(
  items: unknown[],
  q: URLSearchParams,
): { json: unknown[]; headers: Record<string, string> } {
  const rawLimit = q.get('limit');
  const limit = rawLimit === null ? 100 : Number(rawLimit);
  if (rawLimit !== null && (!/^\d{1,4}$/.test(rawLimit) || limit < 1 || limit > 1000))
    throw invalid(`limit must be an integer from 1 to 1000; got ${JSON.stringify(rawLimit)}`);
  const rawPage = q.get('page');
  if (rawPage !== null && !/^\d{1,9}$/.test(rawPage))
    throw invalid(`page ${JSON.stringify(rawPage)} is not a page token this API handed out`);
  const start = rawPage === null ? 0 : Number(rawPage);
  const slice = items.slice(start, start + limit);
  const headers: Record<string, string> = {};
  if (start + limit < items.length) headers['opc-next-page'] = String(start + limit);
  return { json: slice, headers };
}

/** Starts a fake API (convenience). */
export async function startFakeOciApi(options: FakeOciApiOptions = {}): Promise<FakeOciApi> {
  return new FakeOciApi(options).start();
}
