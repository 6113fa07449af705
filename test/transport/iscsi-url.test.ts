import { describe, expect, it } from 'vitest';
import { isIscsiUrl, parseIscsiUrl } from '../../lib/transport/iscsi-url.js';
import { InvalidArgValueError } from '../../lib/validate.js';

const IQN = 'iqn.2015-12.com.oracleiaas:0f1b2c3d-aaaa';

function errorOf(url: string): InvalidArgValueError {
  try {
    parseIscsiUrl(url);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgValueError);
    expect((err as InvalidArgValueError).code).toBe('ERR_INVALID_ARG_VALUE');
    return err as InvalidArgValueError;
  }
  throw new Error(`no error for ${url}`);
}

describe('parseIscsiUrl', () => {
  it('parses host, default port 3260, IQN and LUN', () => {
    expect(parseIscsiUrl(`iscsi://169.254.2.2/${IQN}/1`)).toEqual({
      host: '169.254.2.2',
      port: 3260,
      targetName: IQN,
      lun: 1,
      address: `iscsi://169.254.2.2/${IQN}/1`,
    });
  });

  it('parses an explicit port, a user name, a host name and the LUN range ends', () => {
    expect(parseIscsiUrl(`iscsi://backup@portal.example.com:3261/${IQN}/0`)).toEqual({
      host: 'portal.example.com',
      port: 3261,
      targetName: IQN,
      lun: 0,
      username: 'backup',
      address: `iscsi://backup@portal.example.com:3261/${IQN}/0`,
    });
    expect(parseIscsiUrl(`ISCSI://h/${IQN}/16383`).lun).toBe(16383);
    expect(parseIscsiUrl('iscsi://h/eui.0123456789abcdef/2').targetName).toBe(
      'eui.0123456789abcdef',
    );
    expect(isIscsiUrl('iscsi://x')).toBe(true);
    expect(isIscsiUrl('/dev/sdb')).toBe(false);
  });

  it('parses IPv6 hosts in brackets', () => {
    expect(parseIscsiUrl(`iscsi://[::1]/${IQN}/1`)).toMatchObject({ host: '::1', port: 3260 });
    expect(parseIscsiUrl(`iscsi://u@[fe80::1]:860/${IQN}/3`)).toMatchObject({
      host: 'fe80::1',
      port: 860,
      lun: 3,
      username: 'u',
      address: `iscsi://u@[fe80::1]:860/${IQN}/3`,
    });
  });

  it('refuses a secret in the URL without echoing it, and says where the secret goes', () => {
    for (const url of [
      `iscsi://user%Sup3rSecr3t!@host/${IQN}/1`,
      `iscsi://user:Sup3rSecr3t!@host/${IQN}/1`,
      `iscsi://user%Sup3r/Secr3t!@host/${IQN}/1`,
      `iscsi://user%Sup3r@Secr3t!@host/${IQN}/1`,
    ]) {
      const e = errorOf(url);
      expect(e.message).toContain('LBA_STATUS_CHAP_SECRET');
      expect(e.message).toContain('--chap-secret-file FILE');
      expect(e.message).not.toContain('Sup3r');
      expect(e.message).not.toContain('Secr3t');
      expect(JSON.stringify(e)).not.toContain('Secr3t');
      expect(e.stack).not.toContain('Secr3t');
    }
  });

  it('names what to fix in a malformed URL', () => {
    const cases: Array<[string, RegExp]> = [
      [`http://host/${IQN}/1`, /must start with iscsi:\/\//],
      [`/dev/sdb`, /must start with iscsi:\/\//],
      [`iscsi:///${IQN}/1`, /has no host/],
      [`iscsi://:3260/${IQN}/1`, /has no host/],
      [`iscsi://host`, /has no target IQN/],
      [`iscsi://host/`, /has no target IQN/],
      [`iscsi://host//1`, /has no target IQN/],
      [`iscsi://host:3260/1`, /where the target name goes/],
      [`iscsi://host/${IQN}`, /has no LUN/],
      [`iscsi://host/${IQN}/`, /has no LUN/],
      [`iscsi://host/${IQN}/16384`, /LUN must be an integer from 0 to 16383/],
      [`iscsi://host/${IQN}/-1`, /LUN must be an integer from 0 to 16383/],
      [`iscsi://host/${IQN}/1x`, /LUN must be an integer/],
      [`iscsi://host/${IQN}/1/2`, /more than TARGET-IQN\/LUN/],
      [`iscsi://host:0/${IQN}/1`, /port must be an integer from 1 to 65535/],
      [`iscsi://host:65536/${IQN}/1`, /port must be an integer from 1 to 65535/],
      [`iscsi://host:abc/${IQN}/1`, /port must be an integer from 1 to 65535/],
      [`iscsi://host:/${IQN}/1`, /port must be an integer/],
      [`iscsi://[::1/${IQN}/1`, /closing "\]"/],
      [`iscsi://[nope]/${IQN}/1`, /not an IPv6 address/],
      [`iscsi://ho st/${IQN}/1`, /not a host name or an IP address/],
      [`iscsi://@host/${IQN}/1`, /empty user name/],
      [`iscsi://host/${IQN}/1?header_digest=crc32c`, /query or fragment/],
    ];
    for (const [url, re] of cases) expect(errorOf(url).message, url).toMatch(re);
  });
});
