/**
 * A streaming PDU reader: feed it TCP chunks of any size, get whole PDUs back. Handles PDUs split
 * across reads, several PDUs in one read, AHS, and data-segment padding.
 *
 * Bounded: a PDU whose data segment is longer than the limit (the receiver's declared
 * MaxRecvDataSegmentLength; 8192 during login) is refused from its BHS alone, before its data is
 * buffered, so the most held is one chunk plus one PDU of at most 48 + 1020 + limit bytes.
 */
import { BHS_LENGTH, IscsiProtocolError, type RawPdu } from './pdu.js';

/**
 * A PDU announced a data segment above the limit. Thrown from its BHS alone (the data is never
 * buffered); carries that BHS (for a Reject or a Login Response) and the PDUs the same push
 * completed before it. The reader is unusable afterwards: close the connection.
 */
export class PduTooLargeError extends IscsiProtocolError {
  override name = 'PduTooLargeError';
  constructor(
    message: string,
    /** The offending PDU's 48-byte BHS (a copy). */
    readonly bhs: Buffer,
    readonly dataSegmentLength: number,
    readonly limit: number,
    /** Whole PDUs completed by the same push, before the offending one. */
    readonly pdus: RawPdu[],
  ) {
    super(message);
  }
}

export interface PduReaderOptions {
  /** Largest data segment accepted (the receiver's MaxRecvDataSegmentLength). Default 8192. */
  maxDataSegmentLength?: number;
  /**
   * Data-In PDUs (opcode 25h) that span TCP chunks are assembled in one reused scratch buffer
   * instead of a fresh one: their bytes are valid only until the next push(). For a consumer that
   * copies Data-In out synchronously (the initiator), this saves an allocation and its page
   * faults per PDU.
   */
  reuseDataInBuffer?: boolean;
}

export class PduReader {
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** Bytes the PDU at the head needs, once its BHS was seen (avoids re-scanning). */
  #need = 0;
  #maxData: number;
  #reuse: boolean;
  #scratch: Buffer | undefined;

  constructor(options: PduReaderOptions = {}) {
    this.#maxData = options.maxDataSegmentLength ?? 8192;
    this.#reuse = options.reuseDataInBuffer ?? false;
  }

  /** Raises or lowers the data segment limit (after login negotiation). */
  setMaxDataSegmentLength(n: number): void {
    this.#maxData = n;
  }

  /** The data segment limit in force. */
  get maxDataSegmentLength(): number {
    return this.#maxData;
  }

  /** Bytes held for an incomplete PDU. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Adds a chunk and returns every PDU it completed, in order. */
  push(chunk: Buffer): RawPdu[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const out: RawPdu[] = [];
    for (;;) {
      if (this.#buffered < BHS_LENGTH || this.#buffered < this.#need) break;
      const head = this.#peek(BHS_LENGTH);
      const ahsLen = head[4]! * 4;
      const dataLen = head.readUIntBE(5, 3);
      if (dataLen > this.#maxData) {
        throw new PduTooLargeError(
          `data segment of ${dataLen} bytes (opcode 0x${(head[0]! & 0x3f).toString(16)}) exceeds the declared MaxRecvDataSegmentLength of ${this.#maxData}`,
          Buffer.from(head),
          dataLen,
          this.#maxData,
          out,
        );
      }
      const total = BHS_LENGTH + ahsLen + ((dataLen + 3) & ~3);
      if (this.#buffered < total) {
        this.#need = total;
        break;
      }
      this.#need = 0;
      const pdu = this.#take(total, this.#reuse && (head[0]! & 0x3f) === 0x25);
      out.push({
        bhs: pdu.subarray(0, BHS_LENGTH),
        ahs: pdu.subarray(BHS_LENGTH, BHS_LENGTH + ahsLen),
        data: pdu.subarray(BHS_LENGTH + ahsLen, BHS_LENGTH + ahsLen + dataLen),
      });
    }
    return out;
  }

  #peek(n: number): Buffer {
    const first = this.#chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.alloc(n);
    let off = 0;
    for (const c of this.#chunks) {
      off += c.copy(out, off, 0, Math.min(c.length, n - off));
      if (off === n) break;
    }
    return out;
  }

  /** Removes the first n bytes: a view when one chunk holds them, else exactly n copied bytes. */
  #take(n: number, scratch = false): Buffer {
    const first = this.#chunks[0]!;
    this.#buffered -= n;
    if (first.length >= n) {
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    let out: Buffer;
    if (scratch) {
      if (!this.#scratch || this.#scratch.length < n) this.#scratch = Buffer.allocUnsafe(n);
      out = this.#scratch.subarray(0, n);
    } else out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.#chunks[0]!;
      const take = Math.min(c.length, n - off);
      c.copy(out, off, 0, take);
      off += take;
      if (take === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(take);
    }
    return out;
  }
}
