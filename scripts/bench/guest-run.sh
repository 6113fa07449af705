# Run inside the UML guest by scripts/bench/run.mjs (via scripts/guest/uml-run.sh, cwd = the
# checkout): prepares one benchmark scenario and runs guest-bench.mjs with CONFIG.
#   sh scripts/bench/guest-run.sh tgt|sim CONFIG.json
# tgt: the guest harness's tgt-iscsi scenario (tgtd + kernel initiator on 127.0.0.1), with the
#      sparse LUN size from LBA_STATUS_TGT_SIZE (run.mjs: 64G); guest-bench writes the extents.
# sim: iscsid only (iscsi-lun.sh's iscsi_start_initiator); guest-bench starts the simulator in
#      its own process and logs the kernel initiator in to it.
scenario=$1
cfg=$2
case $scenario in
tgt)
  . scripts/guest/scenarios/tgt-iscsi.sh
  scenario_up || exit 126
  # figure 7 writes up to 256 MiB of extents (plus the scan extents) into the sparse LUN
  mount -o remount,size=768M /srv/lba-status || exit 126
  ;;
sim)
  . scripts/guest/scenarios/iscsi-lun.sh
  iscsi_start_initiator "${GUEST_OUT:-/tmp}" || exit 126
  scenario_down() { kill "$ISCSID_PID" 2>/dev/null && wait "$ISCSID_PID" 2>/dev/null; return 0; }
  ;;
*)
  echo "guest-run.sh: unknown scenario $scenario" >&2
  exit 2
  ;;
esac
node scripts/bench/guest-bench.mjs "$cfg"
rc=$?
scenario_down
exit $rc
