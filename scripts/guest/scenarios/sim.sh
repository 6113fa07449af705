# Scenario fragment for the simulator (sim-iscsi, sim-iscsi-4k), sourced by /bin/sh inside the
# guest (see ../README.md); the runner boots the guest with EXTRA_MODS=iscsi_tcp and no
# scsi_debug. Bundles and starts the project's own iSCSI target (lib/sim, `sim serve`) with a
# random changed map, logs the kernel initiator in over 127.0.0.1 the way OCI documents it
# (iscsiadm -m node -o new, then --login) and exports LUN 1's nodes and the served map.
# Defines scenario_up and scenario_down.
. scripts/guest/scenarios/iscsi-lun.sh

SIM_IQN=iqn.2024-01.dev.lba-status:sim
SIM_PORT=3260
SIM_PORTAL=127.0.0.1:$SIM_PORT

_sim_log() { echo "scenario ${LBA_STATUS_TEST_SCENARIO:-sim}: $*" >&2; }

scenario_up() {
  _out=${GUEST_OUT:-/tmp}
  _root=$(pwd)
  case "${LBA_STATUS_TEST_SCENARIO:-sim-iscsi}" in
    *-4k) _bs=4096 _cbs=65536 _size=1G ;;
    *) _bs=512 _cbs=4096 _size=256M ;;
  esac
  # The demo (scripts/demo.mjs) chooses its own volume: LBA_STATUS_SIM_SIZE, _CHANGE_BLOCK_SIZE
  # and _CHANGED (a --changed JSON file) override the scenario's random map.
  _size=${LBA_STATUS_SIM_SIZE:-$_size}
  _cbs=${LBA_STATUS_SIM_CHANGE_BLOCK_SIZE:-$_cbs}
  if [ -n "${LBA_STATUS_SIM_CHANGED:-}" ]; then
    _map="--changed $LBA_STATUS_SIM_CHANGED"
  else
    _map="--random-changes 300 --max-extent 8"
  fi
  # A self-contained ESM bundle of `sim serve` (the guest has no TypeScript loader).
  cat >"$_out/sim-main.ts" <<EOT
import { simServeCommand } from '$_root/lib/cli/sim-serve.ts';
const ac = new AbortController();
for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => ac.abort());
const code = await simServeCommand.run(process.argv.slice(2), {
  stdout: process.stdout, stderr: process.stderr, signal: ac.signal, env: process.env,
});
process.exit(code);
EOT
  "$_root/node_modules/.bin/esbuild" "$_out/sim-main.ts" --bundle --platform=node --format=esm \
    --log-level=warning --outfile="$_out/sim-serve.mjs" || { _sim_log "esbuild failed"; return 1; }

  SIM_MAP=$_out/sim-map.json
  # Keep the extra node process small: UML maps guest memory page by page on the host
  # (vm.max_map_count), and the vitest worker needs its share.
  UV_THREADPOOL_SIZE=1 setsid node --v8-pool-size=0 --max-semi-space-size=1 --max-old-space-size=96 \
    "$_out/sim-serve.mjs" --size $_size --block-size $_bs --change-block-size $_cbs \
    $_map --seed "${LBA_STATUS_SIM_SEED:-20240601}" \
    --port $SIM_PORT --iqn $SIM_IQN --dump-changed "$SIM_MAP" --verbose \
    >"$_out/sim.ready" 2>"$_out/sim.log" &
  SIM_PID=$!
  _i=0
  until [ -s "$_out/sim.ready" ]; do
    _i=$((_i + 1)); [ $_i -lt 300 ] || { _sim_log "simulator did not start (see sim.log)"; return 1; }
    kill -0 $SIM_PID 2>/dev/null || { _sim_log "simulator exited (see sim.log)"; return 1; }
    sleep 0.1
  done

  iscsi_start_initiator "$_out" || { _sim_log "iscsid did not start"; return 1; }
  iscsi_login $SIM_IQN $SIM_PORTAL || { _sim_log "iSCSI login failed"; return 1; }
  iscsi_find_lun $SIM_IQN || { _sim_log "LUN 1 did not appear after login"; return 1; }
  export LBA_STATUS_TEST_TARGET=sim
  export LBA_STATUS_TEST_ISCSI_TARGET=$SIM_IQN
  export LBA_STATUS_TEST_ISCSI_PORTAL=$SIM_PORTAL
  export LBA_STATUS_TEST_SIM_MAP=$SIM_MAP
  export LBA_STATUS_TEST_SIM_READY="$_out/sim.ready"
  export LBA_STATUS_TEST_SIM_CHANGE_BLOCK_SIZE=$_cbs
  echo "scenario ${LBA_STATUS_TEST_SCENARIO:-sim}: sg=$LBA_STATUS_TEST_SG block=$LBA_STATUS_TEST_BLOCK" \
    "blockSize=$LBA_STATUS_TEST_BLOCK_SIZE capacity=$LBA_STATUS_TEST_CAPACITY_BLOCKS $(cat "$_out/sim.ready")"
}

scenario_down() {
  iscsiadm -m node -T $SIM_IQN -p $SIM_PORTAL --logout >/dev/null 2>&1
  iscsiadm -m node -o delete -T $SIM_IQN -p $SIM_PORTAL >/dev/null 2>&1
  for _p in ${ISCSID_PID:-} ${SIM_PID:-}; do
    kill "$_p" 2>/dev/null && wait "$_p" 2>/dev/null
  done
  return 0
}
