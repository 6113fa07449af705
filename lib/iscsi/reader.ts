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
  /**
   * The chunks given to push() are valid only during the call (a socket's `onread` buffer,
   * reused for the next read). Data-In PDUs (opcode 25h) are then views of the chunk or of one
   * of two carry buffers and valid only until push() returns; every other PDU is a copy. Bytes of
   * an incomplete PDU are copied into the carry buffer, nothing else is.
   */
  transientChunks?: boolean;
}

export class PduReader {
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** Bytes the PDU at the head needs, once its BHS was seen (avoids re-scanning). */
  #need = 0;
  #maxData: number;
  #reuse: boolean;
  #scratch: Buffer | undefined;
  #transient: boolean;
  /** transientChunks: the bytes of the incomplete PDU at the head (#carryLen of them). */
  #carry: Buffer = Buffer.alloc(0);
  #carryLen = 0;
  /** The other carry buffer: the one the last completed PDU may still view. */
  #spare: Buffer = Buffer.alloc(0);

  constructor(options: PduReaderOptions = {}) {
    this.#maxData = options.maxDataSegmentLength ?? 8192;
    this.#reuse = options.reuseDataInBuffer ?? false;
    this.#transient = options.transientChunks ?? false;
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
    return this.#transient ? this.#carryLen : this.#buffered;
  }

  /** Adds a chunk and returns every PDU it completed, in order. */
  push(chunk: Buffer): RawPdu[] {
    if (this.#transient) return this.#pushTransient(chunk);
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

  /** The whole PDU's length from its BHS at `at`; throws for a data segment above the limit. */
  #total(buf: Buffer, at: number, out: RawPdu[]): number {
    const ahsLen = buf[at + 4]! * 4;
    const dataLen = (buf[at + 5]! << 16) | (buf[at + 6]! << 8) | buf[at + 7]!;
    if (dataLen > this.#maxData) {
      throw new PduTooLargeError(
        `data segment of ${dataLen} bytes (opcode 0x${(buf[at]! & 0x3f).toString(16)}) exceeds the declared MaxRecvDataSegmentLength of ${this.#maxData}`,
        Buffer.from(buf.subarray(at, at + BHS_LENGTH)),
        dataLen,
        this.#maxData,
        out,
      );
    }
    return BHS_LENGTH + ahsLen + ((dataLen + 3) & ~3);
  }

  /** The PDU at buf[at, at + total): views for Data-In, a copy otherwise. */
  #emit(buf: Buffer, at: number, out: RawPdu[]): void {
    const ahsLen = buf[at + 4]! * 4;
    const dataLen = (buf[at + 5]! << 16) | (buf[at + 6]! << 8) | buf[at + 7]!;
    const end = at + BHS_LENGTH + ahsLen + dataLen;
    const pdu = (buf[at]! & 0x3f) === 0x25 ? buf : Buffer.from(buf.subarray(at, end));
    const o = pdu === buf ? at : 0;
    out.push({
      bhs: pdu.subarray(o, o + BHS_LENGTH),
      ahs: pdu.subarray(o + BHS_LENGTH, o + BHS_LENGTH + ahsLen),
      data: pdu.subarray(o + BHS_LENGTH + ahsLen, o + BHS_LENGTH + ahsLen + dataLen),
    });
  }

  /** Copies chunk[from, from + n) to the carry buffer's end (grown to hold `want` bytes). */
  #toCarry(chunk: Buffer, from: number, n: number, want: number): void {
    if (this.#carry.length < want) {
      const grown = Buffer.allocUnsafe(Math.max(want, BHS_LENGTH));
      this.#carry.copy(grown, 0, 0, this.#carryLen);
      this.#carry = grown;
    }
    chunk.copy(this.#carry, this.#carryLen, from, from + n);
    this.#carryLen += n;
  }

  #pushTransient(chunk: Buffer): RawPdu[] {
    const out: RawPdu[] = [];
    let pos = 0;
    const len = chunk.length;
    if (this.#carryLen > 0) {
      // complete the PDU begun in an earlier chunk
      if (this.#carryLen < BHS_LENGTH) {
        const n = Math.min(BHS_LENGTH - this.#carryLen, len);
        this.#toCarry(chunk, 0, n, BHS_LENGTH);
        pos = n;
        if (this.#carryLen < BHS_LENGTH) return out;
      }
      const total = this.#total(this.#carry, 0, out);
      const n = Math.min(total - this.#carryLen, len - pos);
      this.#toCarry(chunk, pos, n, total);
      pos += n;
      if (this.#carryLen < total) return out;
      const done = this.#carry;
      this.#carryLen = 0;
      // the completed PDU may view `done` until the next push: carry on in the other buffer
      this.#carry = this.#spare;
      this.#spare = done;
      this.#emit(done, 0, out);
    }
    while (pos < len) {
      if (len - pos < BHS_LENGTH) {
        this.#toCarry(chunk, pos, len - pos, BHS_LENGTH);
        break;
      }
      const total = this.#total(chunk, pos, out);
      if (len - pos < total) {
        this.#toCarry(chunk, pos, len - pos, total);
        break;
      }
      this.#emit(chunk, pos, out);
      pos += total;
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
