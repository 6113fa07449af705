/**
 * Credentials for the fake tenancy: a fresh RSA key pair, its OCI fingerprint (MD5 of the DER
 * public key, colon-separated hex) and an OCI config file that the SDK's
 * ConfigFileAuthenticationDetailsProvider reads.
 */
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface FakeOciCredentials {
  tenancyId: string;
  userId: string;
  fingerprint: string;
  region: string;
  privateKeyPem: string;
  publicKeyPem: string;
  /** `tenancy/user/fingerprint`, as the SDK puts it in the signature's keyId. */
  keyId: string;
  /** Set when written with {@link writeOciConfig}. */
  configFile?: string;
  keyFile?: string;
  profile?: string;
}

export function fakeOcid(type: string, region = ''): string {
  return `ocid1.${type}.oc1.${region}.${randomBytes(16).toString('hex')}`;
}

/** OCI API key fingerprint of a PEM public key. */
export function keyFingerprint(publicKeyPem: string): string {
  const der = Buffer.from(
    publicKeyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''),
    'base64',
  );
  return (createHash('md5').update(der).digest('hex').match(/../g) ?? []).join(':');
}

export function generateFakeCredentials(
  options: { tenancyId?: string; userId?: string; region?: string } = {},
): FakeOciCredentials {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const tenancyId = options.tenancyId ?? fakeOcid('tenancy');
  const userId = options.userId ?? fakeOcid('user');
  const fingerprint = keyFingerprint(publicKey);
  return {
    tenancyId,
    userId,
    fingerprint,
    region: options.region ?? 'us-ashburn-1',
    privateKeyPem: privateKey,
    publicKeyPem: publicKey,
    keyId: `${tenancyId}/${userId}/${fingerprint}`,
  };
}

/** Writes `dir/config` and `dir/key.pem` (mode 0600); returns the credentials with their paths. */
export async function writeOciConfig(
  dir: string,
  creds: FakeOciCredentials,
  profile = 'DEFAULT',
): Promise<FakeOciCredentials & { configFile: string; keyFile: string; profile: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keyFile = join(dir, 'key.pem');
  const configFile = join(dir, 'config');
  await writeFile(keyFile, creds.privateKeyPem, { mode: 0o600 });
  await writeFile(
    configFile,
    `[${profile}]\nuser=${creds.userId}\nfingerprint=${creds.fingerprint}\ntenancy=${creds.tenancyId}\nregion=${creds.region}\nkey_file=${keyFile}\n`,
    { mode: 0o600 },
  );
  return { ...creds, configFile, keyFile, profile };
}
