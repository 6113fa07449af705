// The fake OCI API's HTTP limits, in process, with small limits so that each case takes
// milliseconds: what is refused before the body is read (401 unsigned, 413 by Content-Length),
// what is cut off while it streams (413 chunked), slow clients (408 and closed), too many
// connections (closed at once), a request head over the limit (431), and the bounded request log.
// Expected answers come from OCI's documented error shape — a JSON body {"code","message"} and an
// opc-request-id header (OCI's API error list; the SDK's handleErrorResponse reads exactly these)
// — and from the limits the test itself sets, never from the server's code.
import { connect, type Socket } from 'node:net';
import * as common from 'oci-common';
import { afterEach, describe, expect, it } from 'vitest';
import { generateFakeCredentials } from '../../lib/sim/fake-oci/credentials.js';
import { FAKE_OCI_LIMITS, FakeOciApi, type FakeOciLimits } from '../../lib/sim/fake-oci/server.js';

let api: FakeOciApi | undefined;
afterEach(async () => {
  await api?.close();
  api = undefined;
});

async function start(limits: FakeOciLimits = {}): Promise<FakeOciApi> {
  api = await new FakeOciApi({ limits }).start();
  return api;
}

/** Headers of a request signed the way the OCI SDK signs it (its own DefaultRequestSigner). */
async function signedHeaders(
  a: FakeOciApi,
  method: string,
  path: string,
  body?: string,
): Promise<Headers> {
  const creds = generateFakeCredentials();
  a.registerKey(creds);
  const provider = new common.SimpleAuthenticationDetailsProvider(
    creds.tenancyId,
    creds.userId,
    creds.fingerprint,
    creds.privateKeyPem,
    null,
  );
  const headers = new Headers();
  await new common.DefaultRequestSigner(provider).signHttpRequest({
    method,
    headers,
    uri: `${a.endpoint}/20160918${path}`,
    ...(body === undefined ? {} : { body }),
  } as never);
  return headers;
}

interface RawResult {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Bytes of request body the client managed to hand to the socket. */
  bodyBytesWritten: number;
  closed: boolean;
}

/**
 * Sends a request head on a raw socket, then body bytes from `chunks` (with backpressure) until
 * an answer arrives or the socket closes; resolves with the parsed answer. Nothing of the body is
 * allocated beyond one reused chunk.
 */
function rawRequest(
  port: number,
  head: string,
  chunks: { size: number; count: number; chunked?: boolean } = { size: 0, count: 0 },
  timeoutMs = 10_000,
): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const sock: Socket = connect(port, '127.0.0.1');
    const buf = Buffer.alloc(chunks.size, 0x61);
    let text = '';
    let written = 0;
    let answered = false;
    let closed = false;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms; got ${JSON.stringify(text)}`));
    }, timeoutMs);
    const finish = () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.1 (\d{3}) [^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(text);
      if (!m) {
        reject(new Error(`not an HTTP answer: ${JSON.stringify(text.slice(0, 200))}`));
        return;
      }
      const headers: Record<string, string> = {};
      for (const line of (m[2] as string).split('\r\n')) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      let body = m[3] as string;
      if (headers['transfer-encoding'] === 'chunked') {
        let out = '';
        for (let at = 0; ; ) {
          const nl = body.indexOf('\r\n', at);
          const size = Number.parseInt(body.slice(at, nl), 16);
          if (!(size > 0)) break;
          out += body.slice(nl + 2, nl + 2 + size);
          at = nl + 2 + size + 2;
        }
        body = out;
      }
      resolve({
        status: Number(m[1]),
        headers,
        body,
        bodyBytesWritten: written,
        closed,
      });
      sock.destroy();
    };
    const complete = () => {
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const len = /\r\ncontent-length: (\d+)/i.exec(text.slice(0, end));
      return text.length >= end + 4 + Number(len?.[1] ?? 0);
    };
    sock.on('data', (d) => {
      text += d.toString('latin1');
      if (!answered && complete()) {
        answered = true;
        // Give the server a moment to close, to report whether it did.
        setTimeout(finish, 50);
      }
    });
    sock.on('close', () => {
      closed = true;
      if (!answered) {
        answered = true;
        finish();
      }
    });
    sock.on('error', () => undefined);
    sock.on('connect', async () => {
      sock.write(head);
      for (let i = 0; i < chunks.count && !answered && !sock.destroyed; i++) {
        const piece = chunks.chunked
          ? Buffer.concat([Buffer.from(`${buf.length.toString(16)}\r\n`), buf, Buffer.from('\r\n')])
          : buf;
        written += buf.length;
        if (!sock.write(piece))
          await new Promise<void>((r) => {
            sock.once('drain', r);
            sock.once('close', r);
          });
      }
    });
  });
}

function expectOciError(r: RawResult, status: number, code: string) {
  expect(r.status).toBe(status);
  expect(r.headers['content-type']).toMatch(/^application\/json/);
  expect(r.headers['opc-request-id']).toMatch(/^[0-9A-Za-z-]{16,}$/);
  const body = JSON.parse(r.body) as { code: unknown; message: unknown };
  expect(body.code).toBe(code);
  expect(typeof body.message).toBe('string');
}

describe('fake OCI API limits', () => {
  it('documents its defaults', () => {
    expect(FAKE_OCI_LIMITS).toEqual({
      maxBodyBytes: 1048576,
      maxHeaderBytes: 16384,
      requestLogSize: 1000,
      headersTimeoutMs: 10000,
      requestTimeoutMs: 30000,
      keepAliveTimeoutMs: 5000,
      idleTimeoutMs: 30000,
      maxConnections: 128,
    });
    expect(new FakeOciApi().limits).toEqual(FAKE_OCI_LIMITS);
    expect(() => new FakeOciApi({ limits: { maxBodyBytes: 0 } })).toThrow(RangeError);
  });

  it('an unsigned 64 MiB body is refused with 401 before it is read, and the connection closed', async () => {
    const a = await start();
    const r = await rawRequest(
      a.port,
      `POST /20160918/volumes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${64 << 20}\r\n\r\n`,
      { size: 1 << 20, count: 64 },
    );
    expectOciError(r, 401, 'NotAuthenticated');
    expect(r.headers.connection).toBe('close');
    expect(r.closed).toBe(true);
    // Refused at once: far less than the body was sent (socket buffers only).
    expect(r.bodyBytesWritten).toBeLessThan(32 << 20);
    expect(a.requests.at(-1)).toMatchObject({ method: 'POST', status: 401 });
  });

  it('a signed request declaring more than maxBodyBytes is refused with 413 before the body is read', async () => {
    const a = await start({ maxBodyBytes: 4096 });
    const h = await signedHeaders(a, 'POST', '/volumes', 'x'.repeat(8192));
    const lines = [...h.entries()].map(([k, v]) => `${k}: ${v}\r\n`).join('');
    const r = await rawRequest(a.port, `POST /20160918/volumes HTTP/1.1\r\n${lines}\r\n`, {
      size: 1024,
      count: 8,
    });
    expectOciError(r, 413, 'PayloadTooLarge');
    expect(r.closed).toBe(true);
  });

  it('a chunked body is cut off at maxBodyBytes while it streams (413)', async () => {
    const a = await start({ maxBodyBytes: 64 << 10 });
    // GET/DELETE sign no body headers, so a signed chunked request gets past the signature.
    const h = await signedHeaders(a, 'DELETE', '/volumes/ocid1.volume.oc1..x');
    const lines = [...h.entries()].map(([k, v]) => `${k}: ${v}\r\n`).join('');
    const r = await rawRequest(
      a.port,
      `DELETE /20160918/volumes/ocid1.volume.oc1..x HTTP/1.1\r\n${lines}Transfer-Encoding: chunked\r\n\r\n`,
      { size: 16 << 10, count: 4096, chunked: true },
    );
    expectOciError(r, 413, 'PayloadTooLarge');
    expect(r.closed).toBe(true);
    expect(r.bodyBytesWritten).toBeLessThan(32 << 20);
  });

  it('Expect: 100-continue gets no "100 Continue" when the request is refused anyway', async () => {
    const a = await start();
    const r = await rawRequest(
      a.port,
      'POST /20160918/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n',
    );
    expectOciError(r, 401, 'NotAuthenticated');
  });

  it('a client that never finishes its request head is answered 408 and closed', async () => {
    const a = await start({ headersTimeoutMs: 300, requestTimeoutMs: 600 });
    const t0 = Date.now();
    const r = await rawRequest(a.port, 'GET /20160918/volumes HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    expectOciError(r, 408, 'RequestTimeout');
    expect(r.closed).toBe(true);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('a request head over maxHeaderBytes is answered 431', async () => {
    const a = await start({ maxHeaderBytes: 4096 });
    const r = await rawRequest(
      a.port,
      `GET /20160918/volumes/${'a'.repeat(8000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    expectOciError(r, 431, 'RequestHeaderFieldsTooLarge');
  });

  it('connections over maxConnections are closed at once; the others are still served', async () => {
    const a = await start({ maxConnections: 3 });
    const held: Socket[] = [];
    for (let i = 0; i < 3; i++) {
      // A keep-alive request answered on each: the server has surely accepted and counted it.
      const s = connect(a.port, '127.0.0.1');
      held.push(s);
      await new Promise<void>((resolve) => {
        s.once('connect', () =>
          s.write(
            'GET /opc/v2/instance/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer Oracle\r\n\r\n',
          ),
        );
        s.once('data', () => resolve());
      });
    }
    const extra = connect(a.port, '127.0.0.1');
    const closed = await new Promise<boolean>((resolve) => {
      extra.on('error', () => undefined);
      extra.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 2000);
    });
    expect(closed).toBe(true);
    held[0]?.destroy();
    await new Promise((r) => held[0]?.once('close', r));
    const h = await signedHeaders(a, 'GET', `/instances/${a.instance.id}`);
    await expect
      .poll(
        async () =>
          (await fetch(`${a.endpoint}/20160918/instances/${a.instance.id}`, { headers: h })).status,
        {
          timeout: 2000,
        },
      )
      .toBe(200);
    for (const s of held) s.destroy();
  });

  it('an idle keep-alive connection is closed after keepAliveTimeoutMs', async () => {
    const a = await start({ keepAliveTimeoutMs: 200 });
    const sock = connect(a.port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write('GET /20160918/volumes HTTP/1.1\r\nHost: x\r\n\r\n');
    const t0 = Date.now();
    let text = '';
    sock.on('data', (d) => {
      text += String(d);
    });
    await new Promise((r) => sock.once('close', r));
    expect(text).toMatch(/^HTTP\/1\.1 401 /);
    expect(Date.now() - t0).toBeLessThan(3500);
  });

  it('keeps only the last requestLogSize requests, with long paths cut', async () => {
    const a = await start({ requestLogSize: 10 });
    for (let i = 0; i < 25; i++) {
      const res = await fetch(
        `${a.endpoint}/20160918/volumes/n${i}-${'z'.repeat(i === 24 ? 5000 : 1)}`,
      );
      await res.arrayBuffer();
    }
    expect(a.requests).toHaveLength(10);
    expect(a.requestCount).toBe(25);
    expect(a.requests[0]?.path).toMatch(/^\/20160918\/volumes\/n15-/);
    expect(a.requests.every((r) => r.status === 401)).toBe(true);
    expect((a.requests.at(-1)?.path ?? '').length).toBeLessThanOrEqual(257);
  });
});
