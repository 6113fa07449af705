# Scenario fragment, sourced by /bin/sh inside the guest (see ../README.md); the runner boots the
# guest with EXTRA_MODS=iscsi_tcp and no scsi_debug. Starts tgtd with one thin LUN (LUN 1) backed
# by a sparse file on tmpfs (tgt answers GET LBA STATUS with SEEK_DATA/SEEK_HOLE, which hostfs
# lacks), starts iscsid, logs the kernel initiator in over 127.0.0.1 and exports the LUN's nodes.
# Defines scenario_up and scenario_down.
. scripts/guest/scenarios/iscsi-lun.sh

TGT_IQN=iqn.2024-01.dev.lba-status:test-lun
TGT_PORTAL=127.0.0.1:3260
TGT_DIR=/srv/lba-status

_tgt_log() { echo "scenario tgt-iscsi: $*" >&2; }

scenario_up() {
  _out=${GUEST_OUT:-/tmp}
  mkdir -p $TGT_DIR && mount -t tmpfs -o size=256M lbas $TGT_DIR || return 1
  truncate -s "${LBA_STATUS_TGT_SIZE:-64M}" $TGT_DIR/lun1.img || return 1

  # Daemons in their own sessions: iscsid's SIGTERM handler signals its whole process group,
  # which would otherwise include the test command and the guest init.
  setsid tgtd -f >"$_out/tgtd.log" 2>&1 &
  TGTD_PID=$!
  _i=0
  until tgtadm --op show --mode system >/dev/null 2>&1; do
    _i=$((_i + 1)); [ $_i -lt 100 ] || { _tgt_log "tgtd did not start (see tgtd.log)"; return 1; }
    sleep 0.1
  done
  _t="tgtadm --lld iscsi"
  $_t --op new --mode target --tid 1 -T $TGT_IQN &&
    $_t --op new --mode logicalunit --tid 1 --lun 1 -b $TGT_DIR/lun1.img &&
    $_t --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1 &&
    $_t --op bind --mode target --tid 1 -I ALL || { _tgt_log "tgtadm failed"; return 1; }

  iscsi_start_initiator "$_out" || { _tgt_log "iscsid did not start"; return 1; }
  iscsi_login $TGT_IQN $TGT_PORTAL || { _tgt_log "iSCSI login failed"; return 1; }
  iscsi_find_lun $TGT_IQN || { _tgt_log "LUN 1 did not appear after login"; return 1; }
  export LBA_STATUS_TEST_TARGET=tgt
  export LBA_STATUS_TEST_BACKING=$TGT_DIR/lun1.img
  export LBA_STATUS_TEST_TGT_TID=1
  export LBA_STATUS_TEST_ISCSI_TARGET=$TGT_IQN
  export LBA_STATUS_TEST_ISCSI_PORTAL=$TGT_PORTAL
  echo "scenario tgt-iscsi: sg=$LBA_STATUS_TEST_SG block=$LBA_STATUS_TEST_BLOCK" \
    "blockSize=$LBA_STATUS_TEST_BLOCK_SIZE capacity=$LBA_STATUS_TEST_CAPACITY_BLOCKS" \
    "backing=$LBA_STATUS_TEST_BACKING"
}

scenario_down() {
  iscsiadm -m node -T $TGT_IQN -p $TGT_PORTAL --logout >/dev/null 2>&1
  iscsiadm -m node -o delete -T $TGT_IQN -p $TGT_PORTAL >/dev/null 2>&1
  tgtadm --lld iscsi --op delete --force --mode target --tid 1 >/dev/null 2>&1
  tgtadm --op delete --mode system >/dev/null 2>&1
  for _p in ${ISCSID_PID:-} ${TGTD_PID:-}; do
    kill "$_p" 2>/dev/null && wait "$_p" 2>/dev/null
  done
  return 0
}
