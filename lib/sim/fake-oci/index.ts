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
  type FakeBackup,
  type FakeInstance,
  FakeOciApi,
  type FakeOciApiOptions,
  type FakeOciDelays,
  type FakeOperation,
  type FakeRequestLog,
  type OciFaultSpec,
  startFakeOciApi,
} from './server.js';
export {
  parseAuthorization,
  type SignedRequest,
  type VerifyResult,
  verifyOciSignature,
} from './signature.js';
