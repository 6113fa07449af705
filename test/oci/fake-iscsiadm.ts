/**
 * A fake iscsiadm for unit tests: an executable Node script that records its argv, keeps node
 * records in a state directory, and on login builds the sysfs entries the kernel would create
 * (session, connection, SCSI host/LUN with block and sg nodes) in a fake sysfs tree. Exit codes can
 * be forced per action through `behavior.json`.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export type FakeAction = 'new' | 'update' | 'delete' | 'login' | 'logout';

export interface FakeIscsiBehavior {
  /** Exit code to return for an action (once per entry, in order). */
  fail?: Partial<Record<FakeAction, number[]>>;
  /** Log in without a disk appearing (device discovery must time out). */
  noDevice?: boolean;
}

const SCRIPT = String.raw`
const fs = require('node:fs');
const path = require('node:path');
const dir = process.env.FAKE_ISCSI_DIR;
const sys = process.env.FAKE_SYSFS;
const args = process.argv.slice(2);
fs.appendFileSync(path.join(dir, 'calls.jsonl'), JSON.stringify(args) + '\n');
const get = (flag) => { const i = args.indexOf(flag); return i >= 0 ? args[i + 1] : undefined; };
const iqn = get('-T'); const portal = get('-p');
const op = get('-o');
const action = args.includes('-l') ? 'login' : args.includes('-u') ? 'logout' : op;
const bfile = path.join(dir, 'behavior.json');
const behavior = fs.existsSync(bfile) ? JSON.parse(fs.readFileSync(bfile, 'utf8')) : {};
const forced = behavior.fail && behavior.fail[action];
if (forced && forced.length) {
  const code = forced.shift();
  fs.writeFileSync(bfile, JSON.stringify(behavior));
  process.stderr.write('iscsiadm: forced failure ' + code + ' for ' + action + '\n');
  process.exit(code);
}
const nfile = path.join(dir, 'nodes.json');
const nodes = fs.existsSync(nfile) ? JSON.parse(fs.readFileSync(nfile, 'utf8')) : {};
const key = iqn + ' ' + portal;
const save = () => fs.writeFileSync(nfile, JSON.stringify(nodes));
const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(portal || '');
const addr = m ? m[1] : ''; const port = m ? m[2] : '';
const sessions = () => {
  const d = path.join(sys, 'class/iscsi_session');
  return fs.existsSync(d) ? fs.readdirSync(d).filter((s) => fs.readFileSync(path.join(d, s, 'targetname'), 'utf8').trim() === iqn) : [];
};
if (args[0] !== '-m' || args[1] !== 'node' || !iqn || !portal) { process.stderr.write('iscsiadm: bad args\n'); process.exit(7); }
if (action === 'new') { nodes[key] = nodes[key] || {}; save(); process.exit(0); }
if (action === 'update') {
  if (!nodes[key]) { process.stderr.write('iscsiadm: No records found\n'); process.exit(21); }
  nodes[key][get('-n')] = get('-v'); save(); process.exit(0);
}
if (action === 'delete') {
  if (!nodes[key]) { process.stderr.write('iscsiadm: No records found\n'); process.exit(21); }
  if (sessions().length) { process.stderr.write('iscsiadm: session is logged in\n'); process.exit(1); }
  delete nodes[key]; save(); process.exit(0);
}
if (action === 'login') {
  if (!nodes[key]) { process.stderr.write('iscsiadm: No records found\n'); process.exit(21); }
  if (sessions().length) process.exit(15);
  const cfile = path.join(dir, 'counter');
  const n = (fs.existsSync(cfile) ? Number(fs.readFileSync(cfile, 'utf8')) : 0) + 1;
  fs.writeFileSync(cfile, String(n));
  const host = n + 1;
  const s = path.join(sys, 'class/iscsi_session', 'session' + n);
  fs.mkdirSync(s, { recursive: true });
  fs.writeFileSync(path.join(s, 'targetname'), iqn + '\n');
  const c = path.join(sys, 'class/iscsi_connection', 'connection' + n + ':0');
  fs.mkdirSync(c, { recursive: true });
  fs.writeFileSync(path.join(c, 'persistent_address'), addr + '\n');
  fs.writeFileSync(path.join(c, 'persistent_port'), port + '\n');
  const ctl = path.join(s, 'device', 'target' + host + ':0:0', host + ':0:0:0');
  fs.mkdirSync(ctl, { recursive: true });
  fs.writeFileSync(path.join(ctl, 'type'), '12\n');
  if (!behavior.noDevice) {
    const lun = path.join(s, 'device', 'target' + host + ':0:0', host + ':0:0:1');
    const letter = String.fromCharCode(98 + n);
    fs.mkdirSync(path.join(lun, 'block', 'sd' + letter, 'queue'), { recursive: true });
    fs.mkdirSync(path.join(lun, 'scsi_generic', 'sg' + n), { recursive: true });
    fs.writeFileSync(path.join(lun, 'type'), '0\n');
    fs.writeFileSync(path.join(lun, 'state'), 'running\n');
    fs.writeFileSync(path.join(lun, 'block', 'sd' + letter, 'queue', 'logical_block_size'), '512\n');
  }
  process.exit(0);
}
if (action === 'logout') {
  const ss = sessions();
  if (!ss.length) { process.stderr.write('iscsiadm: No matching sessions found\n'); process.exit(21); }
  for (const s of ss) {
    fs.rmSync(path.join(sys, 'class/iscsi_session', s), { recursive: true, force: true });
    fs.rmSync(path.join(sys, 'class/iscsi_connection', 'connection' + s.slice(7) + ':0'), { recursive: true, force: true });
  }
  process.exit(0);
}
process.stderr.write('iscsiadm: unsupported\n'); process.exit(7);
`;

export class FakeIscsiadm {
  readonly binary: string;
  readonly sysfsRoot: string;
  constructor(readonly dir: string) {
    this.binary = join(dir, 'iscsiadm');
    this.sysfsRoot = join(dir, 'sys');
  }

  static async create(dir: string): Promise<FakeIscsiadm> {
    const f = new FakeIscsiadm(dir);
    await mkdir(f.sysfsRoot, { recursive: true });
    await writeFile(f.binary, `#!${process.execPath}\n${SCRIPT}`);
    await chmod(f.binary, 0o755);
    return f;
  }

  get env(): NodeJS.ProcessEnv {
    return { ...process.env, FAKE_ISCSI_DIR: this.dir, FAKE_SYSFS: this.sysfsRoot };
  }

  async setBehavior(b: FakeIscsiBehavior): Promise<void> {
    await writeFile(join(this.dir, 'behavior.json'), JSON.stringify(b));
  }

  async calls(): Promise<string[][]> {
    const text = await readFile(join(this.dir, 'calls.jsonl'), 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as string[]);
  }

  async nodes(): Promise<string[]> {
    const text = await readFile(join(this.dir, 'nodes.json'), 'utf8').catch(() => '{}');
    return Object.keys(JSON.parse(text) as object);
  }

  async sessions(): Promise<string[]> {
    const { readdir } = await import('node:fs/promises');
    return readdir(join(this.sysfsRoot, 'class/iscsi_session')).catch(() => []);
  }

  /** Host-side leftovers: node records and sessions. */
  async leftovers(): Promise<string[]> {
    return [
      ...(await this.nodes()).map((n) => `node ${n}`),
      ...(await this.sessions()).map((s) => `session ${s}`),
    ];
  }
}
