/**
 * iSCSI URLs in libiscsi's syntax: `iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN` (port 3260 by
 * default; an IPv6 host in brackets, `iscsi://[::1]/iqn…/1`; LUN 0..16383).
 *
 * libiscsi also accepts a password in the URL (`USER%PASSWORD@`); this library refuses it, so
 * that a CHAP secret never sits in argv, shell history or logs, and never repeats it in a
 * message: the secret comes from LBA_STATUS_CHAP_SECRET, `--chap-secret-file FILE` or the
 * library's `chap` option.
 */
import net from 'node:net';
import { InvalidArgValueError } from '../validate.js';

/** A parsed iSCSI URL. */
export interface IscsiUrl {
  host: string;
  port: number;
  targetName: string;
  lun: number;
  /** The CHAP user name from `USER@`, when given. */
  username?: string;
  /** The URL rebuilt without any secret, for messages: `iscsi://[USER@]HOST[:PORT]/IQN/LUN`. */
  address: string;
}

const SYNTAX = 'iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN';
const EXAMPLE = 'iscsi://169.254.2.2:3260/iqn.2015-12.com.oracleiaas:0f1b2c3d/1';
const IQN_RE =
  /^(iqn\.\d{4}-\d{2}\.[^\s/]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16}(?:[0-9A-Fa-f]{16})?)$/;
const HOSTNAME_RE =
  /^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$/;

/** True when `value` looks like an iSCSI URL (so callers can route it to this transport). */
export function isIscsiUrl(value: string): boolean {
  return /^iscsi:\/\//i.test(value);
}

/** Redacts everything before the last `@` of the authority (a user name and maybe a secret). */
function redact(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)(.*)$/i.exec(url);
  if (!m) return url;
  const at = m[2]!.lastIndexOf('@');
  return at < 0 ? url : `${m[1]}***@${m[2]!.slice(at + 1)}`;
}

/**
 * Parses `iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN`. Throws `InvalidArgValueError`
 * (`ERR_INVALID_ARG_VALUE`) naming what to fix; never echoes a secret.
 */
export function parseIscsiUrl(url: string, name = 'url'): IscsiUrl {
  if (typeof url !== 'string') {
    throw new InvalidArgValueError(name, `must be an iSCSI URL string (${SYNTAX})`, typeof url);
  }
  const fail = (reason: string): never => {
    throw new InvalidArgValueError(name, reason, redact(url));
  };
  if (!isIscsiUrl(url)) fail(`must start with iscsi:// (${SYNTAX}, e.g. ${EXAMPLE})`);
  let rest = url.slice('iscsi://'.length);
  // User info: everything before the last '@' (an IQN never contains one).
  let username: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (userinfo.includes('%') || userinfo.includes(':')) {
      throw new InvalidArgValueError(
        name,
        'must not contain a CHAP secret (USER%SECRET@ or USER:SECRET@): give only the user name in the URL and the secret in the environment variable LBA_STATUS_CHAP_SECRET or a file named with --chap-secret-file FILE (library: the chap option)',
        redact(url),
      );
    }
    if (userinfo.length === 0)
      fail('has an empty user name before "@": remove the "@" or put the CHAP user name before it');
    if (/[\s/?#]/.test(userinfo)) fail('has a user name with a space, "/", "?" or "#" before "@"');
    username = userinfo;
  }
  if (/[?#]/.test(rest))
    fail('must not have a query or fragment (?…, #…): libiscsi URL options are not supported');
  // Host: [IPv6] or a name / IPv4 address, up to ':' or '/'.
  let host: string;
  let hostForUrl: string;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0)
      fail('has an IPv6 address without its closing "]" (e.g. iscsi://[::1]:3260/IQN/LUN)');
    host = rest.slice(1, close);
    if (!net.isIPv6(host)) fail(`has "[${host}]", which is not an IPv6 address`);
    hostForUrl = `[${host}]`;
    rest = rest.slice(close + 1);
  } else {
    const end = rest.search(/[:/]/);
    host = end < 0 ? rest : rest.slice(0, end);
    rest = end < 0 ? '' : rest.slice(end);
    if (host.length === 0) fail(`has no host: put the portal's address after iscsi:// (${SYNTAX})`);
    if (!net.isIPv4(host) && !HOSTNAME_RE.test(host)) {
      fail(
        `has "${host}" as its host, which is not a host name or an IP address (an IPv6 address goes in brackets: [::1])`,
      );
    }
    hostForUrl = host;
  }
  let port = 3260;
  let portText = '';
  if (rest.startsWith(':')) {
    const end = rest.indexOf('/');
    portText = end < 0 ? rest.slice(1) : rest.slice(1, end);
    rest = end < 0 ? '' : rest.slice(end);
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      fail(`has port "${portText}": the port must be an integer from 1 to 65535 (default 3260)`);
    }
    port = Number(portText);
  }
  const parts = rest.split('/');
  // rest is "" or "/IQN/LUN…"
  const iqn = parts[1] ?? '';
  if (iqn.length === 0)
    fail(`has no target IQN: add it after the host (${SYNTAX}, e.g. ${EXAMPLE})`);
  if (!IQN_RE.test(iqn)) {
    fail(
      `has "${iqn}" where the target name goes: it must be an iSCSI name such as iqn.2015-12.com.oracleiaas:… (or eui.…, naa.…)`,
    );
  }
  const lunText = parts[2];
  if (lunText === undefined || lunText.length === 0) {
    fail('has no LUN: add it after the target IQN (…/IQN/LUN; OCI volumes use LUN 1)');
  }
  if (parts.length > 3) fail('has more than TARGET-IQN/LUN after the host; remove the extra path');
  if (!/^\d{1,5}$/.test(lunText!) || Number(lunText) > 16383) {
    fail(`has LUN "${lunText}": the LUN must be an integer from 0 to 16383`);
  }
  const lun = Number(lunText);
  const address = `iscsi://${username !== undefined ? `${username}@` : ''}${hostForUrl}${portText ? `:${port}` : ''}/${iqn}/${lun}`;
  const out: IscsiUrl = { host, port, targetName: iqn, lun, address };
  if (username !== undefined) out.username = username;
  return out;
}
