/**
 * A fake OCI Core API on 127.0.0.1: the calls the delta provisioner makes under /20160918 plus the
 * instance metadata endpoint. It verifies request signatures (401 otherwise), walks lifecycle
 * states over time, answers the documented 400/403/404/409 cases for delta volumes, honours
 * opc-retry-token, and injects failures (429/500/…) on demand. Its iSCSI attachments point where
 * the injectable `attachTarget` callback says (a simulator target in end-to-end runs).
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type FakeOciCredentials,
  fakeOcid,
  generateFakeCredentials,
  writeOciConfig,
} from './credentials.js';
import { verifyOciSignature } from './signature.js';

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
  /** TERMINATED resources answer 404 after this long (default 1000 ms). */
  forgetMs?: number;
}

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
}

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

export interface FakeRequestLog {
  method: string;
  path: string;
  operation: FakeOperation | 'unknown';
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
  409: 'Conflict',
  429: 'TooManyRequests',
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
  readonly requests: FakeRequestLog[] = [];
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
      forgetMs: 1000,
      ...options.delays,
    };
    this.deltaFeatureEnabled = options.deltaFeatureEnabled ?? true;
    this.region = options.region ?? 'us-ashburn-1';
    this.availabilityDomain = options.availabilityDomain ?? 'Uocm:US-ASHBURN-AD-1';
    this.compartmentId = fakeOcid('compartment');
    this.instance = this.addInstance();
  }

  // ---- setup ---------------------------------------------------------------------------------

  /** Trusts a public key for `tenancy/user/fingerprint`. */
  registerKey(creds: Pick<FakeOciCredentials, 'keyId' | 'publicKeyPem'>): void {
    this.#keys.set(creds.keyId, creds.publicKeyPem);
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
    return inst;
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
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent)
          this.sendError(res, 500, 'InternalServerError', String((err as Error)?.message ?? err));
        else res.destroy();
      });
    });
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

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const method = (req.method ?? 'GET').toUpperCase();
    const rawUrl = req.url ?? '/';
    const url = new URL(rawUrl, 'http://127.0.0.1');
    const log: FakeRequestLog = { method, path: url.pathname, operation: 'unknown', status: 0 };
    const token = req.headers['opc-retry-token'];
    if (typeof token === 'string') log.retryToken = token;
    this.requests.push(log);
    const reply = (status: number, json?: unknown, headers: Record<string, string> = {}) => {
      log.status = status;
      const payload = json === undefined ? '' : JSON.stringify(json);
      res.writeHead(status, {
        'opc-request-id': randomUUID().replace(/-/g, '').toUpperCase(),
        ...(payload ? { 'content-type': 'application/json' } : {}),
        ...headers,
      });
      res.end(payload);
    };

    if (url.pathname === '/opc/v2/instance' || url.pathname === '/opc/v2/instance/') {
      log.operation = 'InstanceMetadata';
      if (req.headers.authorization !== 'Bearer Oracle') {
        reply(401, {
          code: 'NotAuthenticated',
          message: 'IMDS v2 needs the header Authorization: Bearer Oracle',
        });
        return;
      }
      const i = this.instance;
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
      reply(404, { code: 'NotFound', message: `no route ${url.pathname}` });
      return;
    }
    const path = url.pathname.slice(API.length);
    const route = this.route(method, path);
    log.operation = route?.op ?? 'unknown';

    if (!this.options.allowUnsigned) {
      const v = verifyOciSignature({ method, url: rawUrl, headers: req.headers, body }, (k) =>
        this.#keys.get(k),
      );
      if (!v.ok) {
        reply(401, {
          code: 'NotAuthenticated',
          message: `The required information to complete authentication was not provided or was incorrect: ${v.reason}`,
        });
        return;
      }
    }
    if (!route) {
      reply(404, {
        code: 'NotAuthorizedOrNotFound',
        message: `${method} ${path} is not served by the fake API`,
      });
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
      try {
        parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
      } catch {
        reply(400, { code: 'CannotParseRequest', message: 'body is not JSON' });
        return;
      }
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
      if (err instanceof HttpError) reply(err.status, { code: err.code, message: err.message });
      else throw err;
    }
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

  private sendError(res: ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, { 'content-type': 'application/json', 'opc-request-id': randomUUID() });
    res.end(JSON.stringify({ code, message }));
  }

  private route(
    method: string,
    path: string,
  ):
    | {
        op: FakeOperation;
        run: (
          body: Record<string, unknown>,
          q: URLSearchParams,
          token?: string,
        ) => Promise<{ status?: number; json?: unknown; headers?: Record<string, string> }>;
      }
    | undefined {
    const seg = path.split('/').filter(Boolean).map(decodeURIComponent);
    const [a, id, extra] = seg;
    if (extra !== undefined) return undefined;
    const one = id !== undefined;
    switch (`${method} ${a}${one ? '/:id' : ''}`) {
      case 'GET volumeBackups/:id':
        return {
          op: 'GetVolumeBackup',
          run: async () => ({ json: this.backupJson(this.getBackup(id as string, 'block')) }),
        };
      case 'GET bootVolumeBackups/:id':
        return {
          op: 'GetBootVolumeBackup',
          run: async () => ({ json: this.backupJson(this.getBackup(id as string, 'boot')) }),
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
          run: async () => ({ json: this.liveVolumeJson(id as string, 'block') }),
        };
      case 'GET bootVolumes/:id':
        return {
          op: 'GetBootVolume',
          run: async () => ({ json: this.liveVolumeJson(id as string, 'boot') }),
        };
      case 'DELETE volumes/:id':
        return { op: 'DeleteVolume', run: async () => this.deleteVolume(id as string, 'block') };
      case 'DELETE bootVolumes/:id':
        return { op: 'DeleteBootVolume', run: async () => this.deleteVolume(id as string, 'boot') };
      case 'GET volumes':
        return { op: 'ListVolumes', run: async (_b, q) => this.listVolumes('block', q) };
      case 'GET bootVolumes':
        return { op: 'ListBootVolumes', run: async (_b, q) => this.listVolumes('boot', q) };
      case 'POST volumeAttachments':
        return { op: 'AttachVolume', run: async (b, _q, t) => this.attach(b, t) };
      case 'GET volumeAttachments/:id':
        return {
          op: 'GetVolumeAttachment',
          run: async () => ({ json: this.attachmentJson(this.getAttachment(id as string)) }),
        };
      case 'DELETE volumeAttachments/:id':
        return { op: 'DetachVolume', run: async () => this.detach(id as string) };
      case 'GET volumeAttachments':
        return { op: 'ListVolumeAttachments', run: async (_b, q) => this.listAttachments(q) };
      case 'GET instances/:id':
        return {
          op: 'GetInstance',
          run: async () => {
            const i = this.#instances.get(id as string);
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
    const cid = requireParam(q, 'compartmentId');
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
        return { json: this.liveVolumeJson(seen.id, kind), headers: { etag: seen.id } };
      }
    }
    const compartmentId = body.compartmentId;
    if (typeof compartmentId !== 'string')
      throw new HttpError(400, 'MissingParameter', 'compartmentId is required');
    if (typeof body.availabilityDomain !== 'string')
      throw new HttpError(400, 'MissingParameter', 'availabilityDomain is required');
    const src = body.sourceDetails as Record<string, unknown> | undefined;
    const expectType = kind === 'block' ? 'volumeBackupDelta' : 'bootVolumeBackupDelta';
    if (!src || src.type !== expectType) {
      throw new HttpError(
        400,
        'InvalidParameter',
        `the fake API only creates delta volumes: sourceDetails.type must be ${expectType} (bad type value)`,
      );
    }
    const { firstBackupId, secondBackupId } = src;
    const cbs = src.changeBlockSizeInBytes ?? 4096;
    const backupType = kind === 'block' ? 'volumebackup' : 'bootvolumebackup';
    for (const idv of [firstBackupId, secondBackupId]) {
      if (
        typeof idv !== 'string' ||
        !new RegExp(`^ocid1\\.${backupType}\\.[a-z0-9]+\\.[a-z0-9-]*\\.[a-z0-9]+$`).test(idv)
      ) {
        throw new HttpError(400, 'InvalidParameter', `malformed backup OCID ${String(idv)}`);
      }
    }
    if (firstBackupId === secondBackupId)
      throw new HttpError(400, 'InvalidParameter', 'firstBackupId and secondBackupId are the same');
    if (
      typeof cbs !== 'number' ||
      !Number.isInteger(cbs) ||
      cbs < 4096 ||
      cbs > 1048576 ||
      (cbs & (cbs - 1)) !== 0
    ) {
      throw new HttpError(
        400,
        'InvalidParameter',
        'changeBlockSizeInBytes must be a power of two from 4096 to 1048576',
      );
    }
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
    const first = this.#backups.get(firstBackupId as string);
    const second = this.#backups.get(secondBackupId as string);
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
    const cid = requireParam(q, 'compartmentId');
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
        return { json: this.attachmentJson(this.getAttachment(seen.id)) };
      }
    }
    if (body.type !== 'iscsi')
      throw new HttpError(400, 'InvalidParameter', 'delta volumes can only be attached as iscsi');
    const instanceId = body.instanceId;
    const volumeId = body.volumeId;
    if (typeof instanceId !== 'string' || !this.#instances.has(instanceId))
      throw notFound(`instance ${String(instanceId)}`);
    const v = this.#volumes.get(volumeId as string);
    if (!v) throw notFound(`volume ${String(volumeId)}`);
    if (stateAt(v.timeline) !== 'AVAILABLE')
      throw new HttpError(
        409,
        'IncorrectState',
        `volume ${String(volumeId)} is ${stateAt(v.timeline)}`,
      );
    const live = [...this.#attachments.values()].some(
      (a) => a.json.volumeId === volumeId && stateAt(a.timeline) !== 'DETACHED',
    );
    if (live)
      throw new HttpError(409, 'Conflict', `volume ${String(volumeId)} is already attached`);
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
    const cid = requireParam(q, 'compartmentId');
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
  const limit = Math.max(1, Math.min(1000, Number(q.get('limit') ?? 100) || 100));
  const start = Number(q.get('page') ?? 0) || 0;
  const slice = items.slice(start, start + limit);
  const headers: Record<string, string> = {};
  if (start + limit < items.length) headers['opc-next-page'] = String(start + limit);
  return { json: slice, headers };
}

/** Starts a fake API (convenience). */
export async function startFakeOciApi(options: FakeOciApiOptions = {}): Promise<FakeOciApi> {
  return new FakeOciApi(options).start();
}
