# Guest side of scripts/bench/diag.mjs (see there): the tgt scenario, then the diagnostics.
. scripts/guest/scenarios/tgt-iscsi.sh
scenario_up || exit 126
mount -o remount,size=768M /srv/lba-status || exit 126
node scripts/bench/diag.mjs >"${DIAG_OUT:-/tmp}/diag.json"
rc=$?
scenario_down
exit $rc
