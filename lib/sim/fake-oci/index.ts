export {
  type FakeOciCredentials,
  fakeOcid,
  generateFakeCredentials,
  keyFingerprint,
  writeOciConfig,
} from './credentials.js';
export {
  type AttachTarget,
  type AttachTargetContext,
  type FakeBackup,
  type FakeInstance,
  FakeOciApi,
  type FakeOciApiOptions,
  type FakeOciDelays,
  type FakeOperation,
  type FakeRequestLog,
  type FaultSpec,
  startFakeOciApi,
} from './server.js';
export { parseAuthorization, type SignedRequest, verifyOciSignature, type VerifyResult } from './signature.js';
