/** iSCSI (RFC 7143) building blocks: PDU codec, text keys, stream reader, login, initiator. */

export * from './initiator.js';
export * from './login.js';
export * from './pdu.js';
export * from './reader.js';
export * from './text.js';
