export {
  type FakeOciCredentials,
  fakeOcid,
  generateFakeCredentials,
  keyFingerprint,
  writeOciConfig,
} from './credentials.js';
export {
  type OciSimulation,
  type OciSimulationInfo,
  type OciSimulationOptions,
  startOciSimulation,
} from './oci-simulation.js';
export {
  type AttachTarget,
  type AttachTargetContext,
  DEFAULT_MAX_ATTACHMENTS_PER_INSTANCE,
  FAKE_OCI_LIMITS,
  type FakeBackup,
  type FakeInstance,
  FakeOciApi,
  type FakeOciApiOptions,
  type FakeOciDelays,
  type FakeOciLimits,
  type FakeOperation,
  type FakeRequestLog,
  type OciFaultSpec,
  startFakeOciApi,
} from './server.js';
export {
  type HeadVerifyResult,
  parseAuthorization,
  type SignedBodyChecks,
  type SignedRequest,
  type SignedRequestHead,
  type VerifyResult,
  verifyOciSignature,
  verifyOciSignatureBody,
  verifyOciSignatureHead,
} from './signature.js';
